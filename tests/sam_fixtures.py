"""Tiny SAMs shared by the tests: segment_anything's own classes, random weights, 64 x 64
input (:func:`medsegflow.models.sam_loader.build_sam` takes these dicts as ``arch``)."""

from __future__ import annotations

from pathlib import Path

TINY_SAM = {
    "img_size": 64,
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "global_attn_indexes": [0],
    "window_size": 4,
    "out_chans": 32,
    "decoder_depth": 1,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 2,
    "iou_head_hidden_dim": 32,
}
"""One encoder block and one decoder block: the prediction tests."""

TINY_SAM_2BLOCK = {
    "img_size": 64,
    "patch_size": 16,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "window_size": 2,
    "global_attn_indexes": [1],
    "out_chans": 32,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 2,
    "iou_head_hidden_dim": 32,
}
"""A windowed and a global encoder block (SAM's layout in small), SAM's 2-block decoder:
the loader and embedding tests."""


def save_tiny_sam(model, checkpoint: Path, *, arch: dict = TINY_SAM) -> Path:
    """Save ``model`` (built from ``arch``) as a pipeline-trained demo model: the state dict
    at ``checkpoint`` and its model card beside it, as the training stage writes them."""
    from medsegflow.models.sam_loader import save_sam_model

    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    save_sam_model(
        model,
        checkpoint,
        model_name="tiny",
        arch="demo",
        spec=arch,
        recipe={"recipe": "scratch"},
    )
    return checkpoint


def embedded_sam_inputs(model, root: Path, *, arch: dict = TINY_SAM) -> dict[str, Path]:
    """Save ``model`` as ``root/model/sam.pth`` (with its model card), embed the test
    split of the preprocessed dataset ``root/pre`` into ``root/emb``; return the prediction
    job's inputs (``preprocessed``, ``embeddings``, ``checkpoint``)."""
    from medsegflow.stages.embed import embed_dataset

    checkpoint = save_tiny_sam(model, root / "model" / "sam.pth", arch=arch)
    embed_dataset(
        preprocessed_dir=root / "pre",
        checkpoint=checkpoint,
        arch="demo",
        family="sam",
        out_dir=root / "emb",
        splits=["test"],
        batch_size=4,
        precision="fp32",
        device="cpu",
    )
    return {
        "preprocessed": root / "pre" / "manifest.tsv",
        "embeddings": root / "emb" / "manifest.tsv",
        "checkpoint": checkpoint,
    }


def promptable(net, *, arch: dict = TINY_SAM):
    """``net`` (a segment_anything ``Sam`` on the CPU) as the ``sam`` family's promptable
    model, in float32: what the shared predictor, propagation and curves take."""
    import torch

    from medsegflow.promptable.sam_model import SamPromptable

    return SamPromptable(
        net, torch.device("cpu"), arch=arch, checkpoint="(in memory)", precision="fp32"
    )
