"""Coarse masks from text-driven saliency maps (MedCLIP-SAMv2's post-processing step)."""
