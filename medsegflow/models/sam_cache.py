"""The embedding cache of 2D promptable models: one ``.npz`` file per case, computed once
per model.

``results/embeddings/{dataset}/{model}/{case_id}.npz`` holds the encoder's named feature
arrays (:class:`~medsegflow.promptable.interface.SliceFeatures`; SAM's one array is
``embeddings``, the image-encoder output) of every embedded slice of the case, and
``manifest.tsv`` (written last) lists the cases: ``case_id, split, n_slices, seconds,
gpu_mem_mb``. ``model.json`` is the model's ``describe()``, with the promptable ``family``
that builds it. Every prompt variant of every method of the model reads these files and
runs only the model's decoder (:meth:`~medsegflow.promptable.interface.PromptableModel.decode`).

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
from pathlib import Path
from typing import Any

import numpy as np

from medsegflow.errors import InputError
from medsegflow.io import atomic_path, write_text

RESERVED = ("case_id", "z", "original_size", "input_size", "image_size")
"""The ``.npz`` entries that are not feature arrays."""


class CaseEmbeddings:
    """The cached features of one case.

    Attributes:
        case_id: the case.
        z: ``(N,)`` int64 slice indices (axis 0 of the ``zyx`` volume) that were embedded.
        arrays: the named feature arrays, each ``(N, ...)``; float32 when the encoder ran
            in float32 (``precision: fp32``, or ``auto`` on the CPU), float16 after
            bf16/fp16 autocast. SAM: ``{"embeddings": (N, C, h, w)}`` (C = 256, h = w = 64
            for the official ViT models at 1024), given as ``embeddings=`` for short.
        original_size: ``(H, W)`` of a slice in the original image.
        input_size: ``(h, w)`` of the resized slice before padding.
        image_size: the encoder's square input side (1024, or the demo model's).
    """

    def __init__(
        self,
        *,
        case_id: str,
        z: np.ndarray,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
        image_size: int,
        arrays: Mapping[str, np.ndarray] | None = None,
        embeddings: np.ndarray | None = None,
    ) -> None:
        named = dict(arrays or {})
        if embeddings is not None:
            named["embeddings"] = embeddings
        if not named:
            raise ValueError(f"case {case_id}: no feature arrays")
        if clash := sorted(set(named) & set(RESERVED)):
            raise ValueError(f"case {case_id}: feature arrays may not be named {clash}")
        self.case_id = case_id
        self.z = z
        self.arrays = named
        self.original_size = original_size
        self.input_size = input_size
        self.image_size = image_size

    @property
    def embeddings(self) -> np.ndarray:
        """The ``embeddings`` array (SAM's image-encoder output)."""
        return self.arrays["embeddings"]

    def index_of(self, z: int) -> int:
        """Row of slice ``z`` in the arrays; :class:`InputError` if it was not embedded."""
        hits = np.flatnonzero(self.z == z)
        if hits.size == 0:
            raise InputError(
                f"case {self.case_id}: slice z={z} has no cached embedding "
                f"(embedded slices: {self.z.tolist()})"
            )
        return int(hits[0])

    def features(self, z: int) -> dict[str, np.ndarray]:
        """The features of slice ``z``: each array's row (what ``decode`` takes)."""
        row = self.index_of(z)
        return {name: array[row] for name, array in self.arrays.items()}


def save_case_embeddings(path: str | os.PathLike, cached: CaseEmbeddings) -> None:
    """Write ``cached`` atomically as an uncompressed ``.npz``; the arrays keep their
    dtype (float32 or float16: what the encoder's precision gave, see
    :func:`medsegflow.models.sam_encode.encode_slices`)."""
    arrays = {name: np.asarray(array) for name, array in cached.arrays.items()}
    for name, array in arrays.items():
        if array.dtype not in (np.float32, np.float16):
            raise ValueError(f"{name} must be float32 or float16, got {array.dtype}")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            case_id=np.array(cached.case_id),
            z=np.asarray(cached.z, dtype=np.int64),
            **arrays,
            original_size=np.asarray(cached.original_size, dtype=np.int64),
            input_size=np.asarray(cached.input_size, dtype=np.int64),
            image_size=np.asarray(cached.image_size, dtype=np.int64),
        )


def load_case_embeddings(path: str | os.PathLike) -> CaseEmbeddings:
    """Read one case's features; :class:`InputError` naming the file if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: embedding file not found")
    try:
        with np.load(path) as data:
            cached = CaseEmbeddings(
                case_id=str(data["case_id"]),
                z=data["z"].astype(np.int64),
                arrays={k: data[k] for k in data.files if k not in RESERVED},
                original_size=tuple(int(v) for v in data["original_size"]),
                input_size=tuple(int(v) for v in data["input_size"]),
                image_size=int(data["image_size"]),
            )
    except (OSError, KeyError, ValueError) as err:
        raise InputError(f"{path}: cannot read cached embeddings ({err})") from None
    for name, array in cached.arrays.items():
        if array.ndim < 2 or array.shape[0] != cached.z.shape[0]:
            raise InputError(
                f"{path}: {name} shape {array.shape} does not match "
                f"{cached.z.shape[0]} slice indices"
            )
    return cached


# --- cache folder layout (written by medsegflow.stages.embed.embed_dataset) -------------

EMBEDDINGS_MANIFEST_COLUMNS = ("case_id", "split", "n_slices", "seconds", "gpu_mem_mb")
"""``gpu_mem_mb``: the case's peak GPU memory while encoding, NaN on the CPU."""
MODEL_INFO_FILE = "model.json"
"""The model that made the cache: its ``describe()`` (``family``, ``arch``, ``checkpoint``,
``image_size``, ``precision``, ...)."""
MODEL_CLASS_KEY = "model_class"
"""``model.json``'s ``module:Class`` of the promptable model class that made the cache (its
family's ``Family.promptable``), which decoding builds again (:func:`model_class`)."""
CACHE_FAMILY_BEFORE_RECORDED = "sam"
"""The family of a cache written before ``model.json`` recorded one (only SAM made them)."""
CACHE_CLASS_BEFORE_RECORDED = "medsegflow.promptable.sam_model:SamPromptable"
"""The model class of such a cache."""


def case_embeddings_path(embeddings_dir: str | os.PathLike, case_id: str) -> Path:
    """``embeddings_dir/{case_id}.npz``."""
    return Path(embeddings_dir) / f"{case_id}.npz"


def write_model_info(
    embeddings_dir: str | os.PathLike, info: Mapping[str, Any], *, model_class: type
) -> None:
    """Write ``model.json`` (atomically): a model's ``describe()``, which must give its
    ``family``, ``arch``, ``checkpoint`` and ``image_size`` (what decoding builds it from)
    and the precision its encoder ran in, and ``model_class`` (:data:`MODEL_CLASS_KEY`)."""
    missing = [k for k in ("family", "arch", "checkpoint", "image_size") if k not in info]
    if missing:
        raise ValueError(f"model description lacks {missing}")
    info = {**info, MODEL_CLASS_KEY: f"{model_class.__module__}:{model_class.__qualname__}"}
    write_text(Path(embeddings_dir) / MODEL_INFO_FILE, json.dumps(info, indent=2) + "\n")


def model_class(info: Mapping[str, Any], *, source: str | os.PathLike) -> type:
    """The promptable model class a cache's ``model.json`` (read from ``source``) names;
    :class:`InputError` naming the file when it cannot be imported. Decoding imports it
    by this record, so the shared predictor needs no registry lookup (the registry chose
    it when the cache was made, from ``sam_models.<m>.family``)."""
    import importlib

    where = str(info.get(MODEL_CLASS_KEY, CACHE_CLASS_BEFORE_RECORDED))
    module, _, name = where.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise InputError(
            f"{source}: model class '{where}' of family '{model_family(info)}' cannot be "
            f"imported ({err}); recompute the cache"
        ) from None


def model_family(info: Mapping[str, Any]) -> str:
    """The promptable family that built a cache's model (:data:`CACHE_FAMILY_BEFORE_RECORDED`
    for a cache from before it was recorded)."""
    return str(info.get("family", CACHE_FAMILY_BEFORE_RECORDED))


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
