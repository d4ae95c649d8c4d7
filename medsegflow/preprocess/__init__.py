"""Preprocessing, pure numpy: intensity normalisation, label cleaning, slice selection.

- :mod:`~medsegflow.preprocess.intensity`: CT windowing and foreground percentile
  normalisation to ``uint8`` 0..255 (MedSAM's recipe).
- :mod:`~medsegflow.preprocess.cleaning`: removal of small 3D and 2D connected components.
- :mod:`~medsegflow.preprocess.slices`: which axial slices a 2D method is run and scored on.

The I/O over a dataset lives in :mod:`medsegflow.stages.preprocess`.
"""

from __future__ import annotations
