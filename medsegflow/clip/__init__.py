"""CLIP models of the text-driven family (MedCLIP-SAMv2).

- :mod:`~medsegflow.clip.bundle`: :class:`ClipBundle`, what every stage uses;
- :mod:`~medsegflow.clip.registry`: backends, official sources, missing-weight messages;
- :mod:`~medsegflow.clip.backends`: loading BiomedCLIP folders, OpenAI files, trained folders;
- :mod:`~medsegflow.clip.demo`: the demo CLIP and the folder layout trained models use;
- :mod:`~medsegflow.clip.captions`: image-caption pairs from preprocessed datasets;
- :mod:`~medsegflow.clip.dhn_nce`: the DHN-NCE loss;
- :mod:`~medsegflow.clip.finetune`: training and fine-tuning with it.

Submodules import torch, open_clip and transformers lazily; import them directly.
"""
