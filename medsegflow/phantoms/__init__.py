"""Deterministic synthetic images with ground truth and captions for the offline demo.

- :func:`generate_ct_case`: 3D abdominal CT (HU) with liver, spleen, kidneys and 0-3
  hypodense liver lesions.
- :func:`generate_us_case`: 2D breast ultrasound with one benign or malignant lesion.

Both draw all randomness from the ``np.random.Generator`` they are given.
"""

from __future__ import annotations

from medsegflow.phantoms.ct import CT_LABEL_MAP, PhantomCT, ct_caption, generate_ct_case
from medsegflow.phantoms.ultrasound import (
    LESION_KINDS,
    US_LABEL_MAP,
    PhantomUS,
    generate_us_case,
    us_caption,
)

__all__ = [
    "CT_LABEL_MAP",
    "LESION_KINDS",
    "US_LABEL_MAP",
    "PhantomCT",
    "PhantomUS",
    "ct_caption",
    "generate_ct_case",
    "generate_us_case",
    "us_caption",
]
