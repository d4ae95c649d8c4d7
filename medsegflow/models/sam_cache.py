"""The SAM image-embedding cache: one ``.npz`` file per case, computed once per model.

``results/embeddings/{dataset}/{model}/{case_id}.npz`` holds the image-encoder output of
every embedded slice of the case, and ``manifest.tsv`` (written last) lists the cases:
``case_id, split, n_slices, seconds, gpu_mem_mb``. Every prompt variant of every SAM method reads
these files and runs only the prompt encoder and mask decoder.

Coordinate frames: prompts are stored in the ORIGINAL slice frame (pixels, x = column,
``XYXY`` boxes, ``xy`` points). The model's input recipe
(:mod:`medsegflow.models.input_recipes`) resized each slice to ``input_size = (h, w)``
inside the encoder's square input (SAM and LiteMedSAM: longest side ``image_size``, then
padding; MedSAM: the whole square); the decoder maps prompts and masks with the same
recipe, and the cache stores ``original_size``, ``input_size`` and ``image_size``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsegflow.errors import InputError
from medsegflow.io import atomic_path, write_text


@dataclass
class CaseEmbeddings:
    """The cached embeddings of one case.

    Attributes:
        case_id: the case.
        z: ``(N,)`` int64 slice indices (axis 0 of the ``zyx`` volume) that were embedded.
        embeddings: ``(N, C, h, w)`` image-encoder outputs (C = 256, h = w = 64 for the
            official ViT models at 1024): float32 when the encoder ran in float32
            (``precision: fp32``, or ``auto`` on the CPU), float16 after bf16/fp16 autocast.
        original_size: ``(H, W)`` of a slice in the original image.
        input_size: ``(h, w)`` of the resized slice before padding.
        image_size: the encoder's square input side (1024, or the demo model's).
    """

    case_id: str
    z: np.ndarray
    embeddings: np.ndarray
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    image_size: int

    def index_of(self, z: int) -> int:
        """Row of slice ``z`` in ``embeddings``; :class:`InputError` if it was not embedded."""
        hits = np.flatnonzero(self.z == z)
        if hits.size == 0:
            raise InputError(
                f"case {self.case_id}: slice z={z} has no cached embedding "
                f"(embedded slices: {self.z.tolist()})"
            )
        return int(hits[0])


def save_case_embeddings(path: str | os.PathLike, cached: CaseEmbeddings) -> None:
    """Write ``cached`` atomically as an uncompressed ``.npz``; the embeddings keep their
    dtype (float32 or float16: what the encoder's precision gave, see
    :func:`medsegflow.models.sam_encode.encode_slices`)."""
    embeddings = np.asarray(cached.embeddings)
    if embeddings.dtype not in (np.float32, np.float16):
        raise ValueError(f"embeddings must be float32 or float16, got {embeddings.dtype}")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            case_id=np.array(cached.case_id),
            z=np.asarray(cached.z, dtype=np.int64),
            embeddings=embeddings,
            original_size=np.asarray(cached.original_size, dtype=np.int64),
            input_size=np.asarray(cached.input_size, dtype=np.int64),
            image_size=np.asarray(cached.image_size, dtype=np.int64),
        )


def load_case_embeddings(path: str | os.PathLike) -> CaseEmbeddings:
    """Read one case's embeddings; :class:`InputError` naming the file if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: embedding file not found")
    try:
        with np.load(path) as data:
            cached = CaseEmbeddings(
                case_id=str(data["case_id"]),
                z=data["z"].astype(np.int64),
                embeddings=data["embeddings"],
                original_size=tuple(int(v) for v in data["original_size"]),
                input_size=tuple(int(v) for v in data["input_size"]),
                image_size=int(data["image_size"]),
            )
    except (OSError, KeyError, ValueError) as err:
        raise InputError(f"{path}: cannot read cached embeddings ({err})") from None
    if cached.embeddings.ndim != 4 or cached.embeddings.shape[0] != cached.z.shape[0]:
        raise InputError(
            f"{path}: embeddings shape {cached.embeddings.shape} does not match "
            f"{cached.z.shape[0]} slice indices"
        )
    return cached


# --- cache folder layout (written by medsegflow.stages.embed.embed_dataset) -------------

EMBEDDINGS_MANIFEST_COLUMNS = ("case_id", "split", "n_slices", "seconds", "gpu_mem_mb")
"""``gpu_mem_mb``: the case's peak GPU memory while encoding, NaN on the CPU."""
MODEL_INFO_FILE = "model.json"
"""``{"arch": str, "checkpoint": str, "image_size": int}``: the model that made the cache."""


def case_embeddings_path(embeddings_dir: str | os.PathLike, case_id: str) -> Path:
    """``embeddings_dir/{case_id}.npz``."""
    return Path(embeddings_dir) / f"{case_id}.npz"


def write_model_info(
    embeddings_dir: str | os.PathLike,
    *,
    arch: str | Mapping[str, Any],
    checkpoint: str | os.PathLike,
    image_size: int,
    precision: str | None = None,
) -> None:
    """Write ``model.json`` (atomically): the arch and checkpoint to load for decoding,
    and the precision the encoder ran in (``fp32``/``bf16``/``fp16``, when given)."""
    info = {"arch": arch, "checkpoint": str(checkpoint), "image_size": int(image_size)}
    if precision is not None:
        info["precision"] = str(precision)
    write_text(Path(embeddings_dir) / MODEL_INFO_FILE, json.dumps(info, indent=2) + "\n")


def read_model_info(embeddings_dir: str | os.PathLike) -> dict[str, object]:
    """``model.json`` of a cache folder; :class:`InputError` naming the file if unusable."""
    path = Path(embeddings_dir) / MODEL_INFO_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the cache's model description ({err})") from None
    missing = [k for k in ("arch", "checkpoint", "image_size") if k not in info]
    if missing:
        raise InputError(f"{path}: missing keys {missing}")
    return info
