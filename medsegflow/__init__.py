"""MedSegFlow."""
