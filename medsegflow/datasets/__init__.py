"""Data adapters: each turns a raw source into the canonical layout (see ``canonical``)."""
