"""Text-driven saliency maps of CLIP models (M2IB), the first step of MedCLIP-SAMv2."""

from __future__ import annotations

from medsegflow.saliency.m2ib import M2IBParams, image_saliency, minmax_normalise, text_saliency

__all__ = ["M2IBParams", "image_saliency", "minmax_normalise", "text_saliency"]
