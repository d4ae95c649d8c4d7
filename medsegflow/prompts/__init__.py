"""Prompts for SAM-family models, pure numpy: oracle boxes from ground truth (jittered).

Boxes are ``XYXY`` in pixel coordinates of one axial slice (x = column, y = row,
inclusive pixel indices). The I/O over a dataset lives in :mod:`medsegflow.stages.prompts`.
"""

from __future__ import annotations
