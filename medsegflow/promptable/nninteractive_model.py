"""nnInteractive (MIC-DKFZ, CVPR 2025) on the official package's inference session.

:class:`NnInteractiveModel` loads a model folder in the released layout by path with the
package's own loader (``nnInteractiveInferenceSession.initialize_from_trained_model_folder``,
package ``nninteractive`` 2.6.0). The folder holds

- ``plans.json`` and ``dataset.json`` (nnU-Net v2's: the network's architecture and patch
  size, the image channels);
- ``inference_info.json`` (the capability metadata: supported interactions, channel
  mapping, point radius, scribble thickness, interaction decay) or, in older folders such
  as the released ``nnInteractive_v1.0``, ``inference_session_class.json``;
- ``fold_<f>/<checkpoint_name>``: the nnU-Net trainer's checkpoint, a dict with
  ``network_weights`` (the state dict), ``trainer_name`` and ``init_args``
  (``configuration`` names the plans' configuration); the package loads it with
  ``torch.load(weights_only=False)``, as it does for the released weights.

:meth:`NnInteractiveModel.start_session` hands the image to ``set_image`` once, with
its original intensities (the package normalises it itself: z-score over the nonzero
region) and a ``uint8`` target buffer; every :class:`~medsegflow.promptable.interface.
Interaction` becomes one ``add_*_interaction`` call with ``run_prediction=True`` and the
returned mask is the target buffer (the current object). ``reset`` is the package's
``reset_interactions`` (also clears the target buffer).

**Axes.** The package calls its axes ``(x, y, z)``, but its README passes
``sitk.GetArrayFromImage(image)[None]`` and its CVPR 2025 baseline ``image[None]`` of the
challenge's ``(D, H, W)`` arrays, both ``(z, y, x)`` numpy order, which is also the order
nnU-Net trains in. MedSegFlow's volumes are ``(z, y, x)`` arrays, so image, points,
boxes, scribbles and lassos go to the package in that order unchanged. Spacing is passed
as ``image_properties`` and, as the package documents, unused (it works in voxels).

**Boxes.** A ``key_slice_box`` (a 2D box on slice ``z``, inclusive pixel corners) is the
package's 2D box ``[[z, z + 1], [y0, y1 + 1], [x0, x1 + 1]]`` (half-open); a ``box3d`` is
its 3D box, only where the folder's capability declares ``bbox3d`` (the released v1.0
takes 2D boxes only: such a model's ``native_prompts`` lack ``box3d``, so the shared
protocol sends the prompt row's key-slice box instead).

**Scribbles and lassos** (``mask_zyx``) are sent as the crop of their bounding box with its
``interaction_bbox``, the package's recommended form; their values are 0/1.

Device: CUDA when available, else the CPU (``device`` overrides). Precision is the
package's: ``torch.autocast`` on CUDA (float16), float32 on the CPU. Threads: the
session's ``torch_n_threads`` is torch's current count, which the job set with
:func:`medsegflow.threads.limit_threads`. The package's progress prints go to this
module's log at DEBUG level.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from medsegflow.errors import InputError
from medsegflow.promptable.interface import Interaction, PromptableModel, VolumeSession

if TYPE_CHECKING:
    from medsegflow.io import Geometry

log = logging.getLogger(__name__)

KIND = "nninteractive"
CAPABILITY_FILES = ("inference_info.json", "inference_session_class.json")
DEFAULT_CHECKPOINT = "checkpoint_final.pth"


@contextlib.contextmanager
def _quiet(what: str) -> Iterator[None]:
    """The package prints its progress; keep it in this module's DEBUG log."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        text = buffer.getvalue().strip()
        if text:
            log.debug("nnInteractive %s:\n%s", what, text)


def fold_folder(folder: Path, fold: int | str | None) -> Path:
    """The ``fold_<f>`` folder the package loads: ``fold`` (an integer or ``"all"``), or
    the only ``fold_*`` folder when ``fold`` is None (the package's own rule).
    :class:`InputError` naming the path when it is not there."""
    if fold is not None:
        path = folder / f"fold_{fold}"
        if not path.is_dir():
            raise InputError(f"{path}: fold folder not found in the nnInteractive model folder")
        return path
    found = sorted(p for p in folder.glob("fold_*") if p.is_dir())
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise InputError(
            f"{folder}: the fold is inferred only from exactly one fold_* folder, found "
            f"{names}; set fold:"
        )
    return found[0]


def check_model_folder(
    folder: str | os.PathLike, *, fold: int | str | None, checkpoint_name: str
) -> Path:
    """The checkpoint file of an nnInteractive model folder; :class:`InputError` naming the
    first missing path (the folder, plans.json, dataset.json, the capability metadata,
    the fold folder, the checkpoint)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: nnInteractive model folder not found")
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            raise InputError(f"{folder / name}: missing from the nnInteractive model folder")
    if not any((folder / name).is_file() for name in CAPABILITY_FILES):
        raise InputError(
            f"{folder}: nnInteractive model folder without {' or '.join(CAPABILITY_FILES)}"
        )
    checkpoint = fold_folder(folder, fold) / checkpoint_name
    if not checkpoint.is_file():
        raise InputError(f"{checkpoint}: checkpoint not found in the nnInteractive model folder")
    return checkpoint


def _half_open(lo: float, hi: float, size: int) -> list[int]:
    """Inclusive corners ``lo..hi`` (floats: rounded outwards) as a half-open voxel range
    inside ``[0, size)``."""
    start = max(int(np.floor(lo)), 0)
    stop = min(int(np.ceil(hi)) + 1, size)
    return [start, max(stop, start + 1)]


class NnInteractiveSession(VolumeSession):
    """One image in the package's session; one object at a time (the target buffer)."""

    def __init__(self, model: NnInteractiveModel, image_zyx: np.ndarray, spacing_zyx) -> None:
        import torch

        self.model = model
        self.shape = tuple(int(s) for s in image_zyx.shape)
        self.session = model.session
        if not np.any(image_zyx):
            raise InputError(
                f"image of shape {self.shape} is all zeros: nnInteractive normalises over "
                "the nonzero region and cannot use it"
            )
        start = time.perf_counter()
        with _quiet("set_image"):
            self.session.set_image(
                np.asarray(image_zyx)[None], {"spacing": [float(s) for s in spacing_zyx]}
            )
            self.target = torch.zeros(self.shape, dtype=torch.uint8)
            self.session.set_target_buffer(self.target)
            self.session._finish_preprocessing_and_initialize_interactions()
        self.seconds = {"set_image_seconds": time.perf_counter() - start}
        self.seconds["interaction_seconds"] = 0.0
        self.n_interactions = 0

    def reset(self) -> None:
        with _quiet("reset_interactions"):
            self.session.reset_interactions()

    def _send(self, interaction: Interaction) -> None:
        session, positive = self.session, bool(interaction.positive)
        kind = interaction.kind
        if kind == "points3d":
            if interaction.point_zyx is None:
                raise ValueError("points3d interaction without point_zyx")
            session.add_point_interaction(tuple(int(v) for v in interaction.point_zyx), positive)
        elif kind == "box3d":
            if "box3d" not in self.model.native_prompts:
                raise ValueError(
                    f"{self.model.folder}: the model folder's capability declares no 3D "
                    "boxes (bbox3d); send a key_slice_box"
                )
            z0, y0, x0, z1, y1, x1 = interaction.box_zyxzyx
            box = [
                _half_open(a, b, s)
                for a, b, s in zip((z0, y0, x0), (z1, y1, x1), self.shape, strict=True)
            ]
            session.add_bbox_interaction(box, positive)
        elif kind == "key_slice_box":
            if interaction.box_xyxy is None or interaction.z is None:
                raise ValueError("key_slice_box interaction needs box_xyxy and z")
            x0, y0, x1, y1 = interaction.box_xyxy
            z = int(interaction.z)
            box = [[z, z + 1], _half_open(y0, y1, self.shape[1]), _half_open(x0, x1, self.shape[2])]
            session.add_bbox_interaction(box, positive)
        elif kind in ("scribble", "lasso"):
            mask = np.asarray(interaction.mask_zyx, dtype=bool)
            if mask.shape != self.shape:
                raise ValueError(f"{kind} mask of shape {mask.shape}, image {self.shape}")
            if not mask.any():
                raise ValueError(f"{kind} mask is empty")
            where = np.argwhere(mask)
            bbox = [[int(a), int(b) + 1] for a, b in zip(where.min(0), where.max(0), strict=True)]
            crop = mask[tuple(slice(a, b) for a, b in bbox)].astype(np.uint8)
            if kind == "scribble":
                add = session.add_scribble_interaction
            else:
                add = session.add_lasso_interaction
            add(crop, positive, interaction_bbox=bbox)
        else:
            raise ValueError(f"{KIND}: interaction kind {kind!r} is not one of its prompts")

    def interact(self, interaction: Interaction) -> np.ndarray:
        start = time.perf_counter()
        with _quiet(interaction.kind):
            self._send(interaction)
        self.seconds["interaction_seconds"] += time.perf_counter() - start
        self.n_interactions += 1
        return self.mask()

    def mask(self) -> np.ndarray:
        """The current object's bool ``(Z, Y, X)`` mask: the package's target buffer."""
        return self.target.numpy() > 0

    def cost(self) -> dict[str, float]:
        return {
            "set_image_seconds": round(self.seconds["set_image_seconds"], 3),
            "interaction_seconds": round(self.seconds["interaction_seconds"], 3),
            "n_interactions": self.n_interactions,
        }

    def close(self) -> None:
        with _quiet("close"):
            self.session._reset_session()


class NnInteractiveModel(PromptableModel):
    """An nnInteractive model folder loaded by the official package (module docstring)."""

    kind: ClassVar[str] = KIND
    dims: ClassVar[int] = 3
    native_prompts: ClassVar[frozenset[str]] = frozenset(
        {"points3d", "box3d", "key_slice_box", "scribble", "lasso"}
    )

    def __init__(self, session: Any, folder: Path, checkpoint: Path, spec: Mapping[str, Any]):
        self.session = session
        self.folder = folder
        self.checkpoint = checkpoint
        self.spec = dict(spec)
        supported = dict(session.supported_interactions)
        prompts = {"points3d": "points", "box3d": "bbox3d", "key_slice_box": "bbox2d"}
        prompts.update(scribble="scribble", lasso="lasso")
        # an instance attribute: what this folder's capability metadata declares
        self.native_prompts = frozenset(k for k, v in prompts.items() if supported.get(v))
        self.precision = "fp16" if session.device.type == "cuda" else "fp32"

    @classmethod
    def build(
        cls,
        spec: Mapping[str, Any],
        checkpoint: str | os.PathLike | None,
        *,
        device: str | None = None,
        precision: str = "auto",
    ) -> NnInteractiveModel:
        """The model folder ``checkpoint`` (a folder, despite the name) loaded by the
        package. ``spec``: ``fold`` (None: the only ``fold_*`` folder; the package's
        README default), ``checkpoint_name`` (``checkpoint_final.pth``), ``autozoom``
        (True, the package's default), ``device``. ``precision`` is the package's own
        (module docstring); only ``auto`` is accepted."""
        import torch
        from nnInteractive.inference.inference_session import nnInteractiveInferenceSession

        from medsegflow.models.sam_loader import select_device

        if checkpoint is None:
            raise ValueError(f"{KIND}: needs a model folder")
        if precision != "auto":
            raise ValueError(f"{KIND}: precision is the package's own, got {precision!r}")
        fold = spec.get("fold")
        name = spec.get("checkpoint_name") or DEFAULT_CHECKPOINT
        folder = Path(checkpoint).expanduser()
        path = check_model_folder(folder, fold=fold, checkpoint_name=name)
        chosen = select_device(device or spec.get("device"))
        start = time.perf_counter()
        with _quiet("initialize"):
            session = nnInteractiveInferenceSession(
                device=chosen,
                use_torch_compile=False,
                verbose=False,
                torch_n_threads=torch.get_num_threads(),
                do_autozoom=bool(spec.get("autozoom", True)),
                enable_undo=False,
            )
            try:
                session.initialize_from_trained_model_folder(
                    str(folder), use_fold=path.parent.name[len("fold_") :], checkpoint_name=name
                )
            except KeyError as err:
                raise InputError(
                    f"{path}: not an nnU-Net/nnInteractive checkpoint or plans (missing key "
                    f"{err}); the trainer saves network_weights, trainer_name and init_args"
                ) from None
            except RuntimeError as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err)
                raise InputError(
                    f"{path}: weights do not fit the network of {folder / 'plans.json'}: {first}"
                ) from None
        log.info(
            "nnInteractive model %s (%s) loaded on %s in %.1f s; license %s",
            folder,
            path.relative_to(folder),
            chosen,
            time.perf_counter() - start,
            session.license,
        )
        return cls(session, folder, path, spec)

    def describe(self) -> dict[str, Any]:
        cm = self.session.configuration_manager
        return {
            "kind": KIND,
            "folder": str(self.folder),
            "checkpoint": str(self.checkpoint),
            "trainer": self.session.trainer_name,
            "patch_size": [int(v) for v in cm.patch_size],
            "native_prompts": sorted(self.native_prompts),
            "autozoom": bool(self.session.do_autozoom),
            "device": str(self.session.device),
            "precision": self.precision,
            "license": self.session.license,
            "package": self.session.INFERENCE_SESSION_VERSION,
        }

    def count_parameters(self) -> int | None:
        return int(sum(p.numel() for p in self.session.network.parameters()))

    def start_session(
        self,
        image_zyx: np.ndarray,
        *,
        spacing_zyx: tuple[float, float, float],
        geometry: Geometry | None = None,
    ) -> NnInteractiveSession:
        return NnInteractiveSession(self, image_zyx, spacing_zyx)
