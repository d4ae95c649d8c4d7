"""SAM-Med3D on the promptable-model interface: :class:`Sam3dPromptable` and its sessions.

The family's predictions run the generic 3D protocol
(:mod:`medsegflow.promptable.volume_protocol`) with these classes; nothing of the protocol
is SAM-Med3D's. What is SAM-Med3D's (uni-medical/SAM-Med3D ``utils/infer_utils.py@7cead583``):

- :meth:`Sam3dPromptable.start_session` resamples the image once to the 1.5 mm RAS model
  frame (:func:`~medsegflow.sam3d.preprocess.to_model_grid`, ``resample_grid``);
- an object's **first click** places its 128^3 crop (centred on that click, or with
  ``crop_centre: gt_centre`` on the reference's centre, the official script's oracle),
  which is encoded once (:class:`~medsegflow.sam3d.session.CropSession`); every click is
  decoded with all of the object's clicks so far and the previous low-resolution logits
  as the mask prompt, ``sigmoid > 0.5``, mapped back onto the original grid
  (:func:`~medsegflow.sam3d.preprocess.block_to_original`);
- **the user's frame** (:meth:`Sam3dSession.user_frame`): the official script samples its
  clicks from the label resampled to the model frame, the first on the whole 1.5 mm grid,
  the next ones inside the crop (an error outside the crop cannot be clicked). The session
  resamples the reference it is given (:func:`~medsegflow.sam3d.preprocess.label_to_model`,
  nearest, as the whole label map would be) and offers that frame, so the generic
  simulated user reproduces the official clicks exactly; the ``gt_centre`` oracle reads
  the same resampled reference (the only use of it by the model, flagged in the logs);
- **windows** (``windows: {enabled: true}``, MedSegFlow's rule, off by default):
  :meth:`Sam3dSession.finish` replaces the last mask of an object whose 3D box does not fit
  in one crop by sliding crops over that box with all of its clicks
  (:func:`medsegflow.sam3d.windows.window_final_box`);
- :meth:`Sam3dSession.cost`: ``encode_seconds`` (the first crops), ``n_windows`` (sliding
  crops run) and ``window_seconds`` per case.

torch is imported inside the functions.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from medsegflow.io import Geometry, Volume
from medsegflow.promptable.interface import Interaction, PromptableModel, UserFrame, VolumeSession
from medsegflow.sam3d.preprocess import (
    CropBox,
    ModelGrid,
    block_to_original,
    crop_box,
    extract,
    gt_centre,
    label_to_model,
    model_to_original,
    original_to_model,
    prepare_crop,
    to_model_grid,
)
from medsegflow.sam3d.session import CropSession

if TYPE_CHECKING:
    from medsegflow.sam3d.windows import WindowResult

log = logging.getLogger(__name__)

CROP_CENTRES = ("first_click", "gt_centre")


@dataclass
class ObjectRecord:
    """What a session did for one object: its crop, its clicks ``[i, j, k, label]`` in the
    model frame (float64, as decoded), seconds (``encode``, ``total``, ``windows``) and
    the sliding crops that made its last mask (None: the single crop)."""

    box: CropBox
    points_ijk: list[np.ndarray] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    windows: WindowResult | None = None


class Sam3dSession(VolumeSession):
    """One image in SAM-Med3D's model frame; one object at a time (module docstring).

    ``object_ijk``: pin the object, given in the model frame (bool, ``grid.shape``); the
    session then ignores the reference :meth:`user_frame` gets (for
    :func:`~medsegflow.sam3d.infer.segment_object`). ``window_overlap``: None (no sliding
    windows) or the least overlap between neighbouring crops."""

    def __init__(
        self,
        model: Any,
        grid: ModelGrid,
        *,
        device: str | None = None,
        precision: str = "fp32",
        crop_centre: str = "first_click",
        window_overlap: float | None = None,
        object_ijk: np.ndarray | None = None,
    ) -> None:
        if crop_centre not in CROP_CENTRES:
            raise ValueError(f"crop_centre must be one of {CROP_CENTRES}, got {crop_centre!r}")
        self.model, self.grid = model, grid
        self.device, self.precision = device, precision
        self.crop_centre, self.window_overlap = crop_centre, window_overlap
        self.size = int(model.image_encoder.img_size)
        self._pinned = None if object_ijk is None else np.asarray(object_ijk, dtype=bool)
        self.records: list[ObjectRecord] = []
        self._cost = {"encode_seconds": 0.0, "n_windows": 0, "window_seconds": 0.0}
        self.reset()

    def reset(self) -> None:
        self._reference_zyx: np.ndarray | None = None
        self._object_ijk = self._pinned
        self._gt_crop: np.ndarray | None = None
        self._crop: CropSession | None = None
        self._low_res = None
        self._pred_crop: np.ndarray | None = None
        self._record: ObjectRecord | None = None
        self._started = time.perf_counter()

    # --- the simulated user's frame ---------------------------------------------------

    def _object(self, reference_zyx: np.ndarray | None) -> np.ndarray | None:
        fresh = reference_zyx is not None and reference_zyx is not self._reference_zyx
        if self._pinned is None and fresh:
            self._reference_zyx = reference_zyx
            self._object_ijk = label_to_model(np.asarray(reference_zyx, bool), self.grid) > 0
            self._gt_crop = None
        return self._object_ijk

    def user_frame(self, reference_zyx: np.ndarray | None) -> UserFrame:
        """The official script's frame: before the first click the whole 1.5 mm grid (the
        reference resampled to it), after it the object's crop (the reference cut to it,
        outside the grid False, and the crop's mask)."""
        object_ijk = self._object(reference_zyx)
        if object_ijk is None:
            raise ValueError("Sam3dSession.user_frame: no reference for the object")
        if self._record is None:
            return UserFrame(object_ijk, None, lambda ijk: model_to_original(ijk, self.grid))
        box = self._record.box
        if self._gt_crop is None:
            self._gt_crop = extract(object_ijk, box, fill=False)
        start = np.asarray(box.start, dtype=np.float64)
        return UserFrame(
            self._gt_crop,
            self._pred_crop,
            lambda index: model_to_original(np.asarray(index, np.float64) + start, self.grid),
        )

    # --- interactions -------------------------------------------------------------------

    def _model_index(self, interaction: Interaction) -> np.ndarray:
        """The click in the model frame (float64): the user-frame index exactly, or the
        original voxel mapped and rounded half up (as the official ``argwhere`` indices)."""
        if interaction.frame_index is not None:
            index = np.asarray(interaction.frame_index, dtype=np.float64)
            return index if self._record is None else index + np.asarray(self._record.box.start)
        if interaction.point_zyx is None:
            raise ValueError("a points3d interaction needs point_zyx or frame_index")
        return np.floor(original_to_model(interaction.point_zyx, self.grid)[0] + 0.5)

    def _open_crop(self, first_ijk: np.ndarray) -> None:
        if self.crop_centre == "gt_centre":
            if self._object_ijk is None:
                raise ValueError("crop_centre gt_centre needs the reference (user_frame)")
            centre = gt_centre(self._object_ijk)
        else:
            centre = first_ijk
        box = crop_box(centre, self.size)
        started = time.perf_counter()
        self._crop = CropSession(
            self.model, prepare_crop(self.grid, box), device=self.device, precision=self.precision
        )
        self._low_res = self._crop.empty_logits()
        self._record = ObjectRecord(box, seconds={"encode": time.perf_counter() - self._started})
        self._cost["encode_seconds"] += time.perf_counter() - started
        self.records.append(self._record)

    def interact(self, interaction: Interaction) -> np.ndarray:
        """A click (``points3d``): the first places and encodes the crop; each is decoded
        with all the clicks so far. Returns the object's bool mask on the original grid."""
        if interaction.kind != "points3d":
            raise ValueError(f"SAM-Med3D takes 3D clicks (points3d), not {interaction.kind}")
        index = self._model_index(interaction)
        if self._record is None:
            self._open_crop(index)
        record = self._record
        record.points_ijk.append(np.r_[index, float(interaction.positive)])
        points = np.asarray(record.points_ijk)
        crop_points = record.box.to_crop(points[:, :3])
        self._low_res, prob = self._crop.decode(crop_points, points[:, 3], self._low_res)
        self._pred_crop = prob > 0.5
        record.seconds["total"] = time.perf_counter() - self._started
        mask = block_to_original(self._pred_crop.astype(np.uint8), record.box.start, self.grid)
        return mask > 0

    def finish(self, box: Interaction) -> np.ndarray | None:
        """With windows on: the object's last mask from sliding crops over ``box`` when it
        does not fit in one crop, with all of its clicks; None otherwise."""
        if self.window_overlap is None or self._record is None:
            return None
        from medsegflow.sam3d.windows import window_final_box

        z0, y0, x0, z1, y1, x1 = box.box_zyxzyx
        record = self._record
        points = np.asarray(record.points_ijk)
        windowed = window_final_box(
            self.model,
            self.grid,
            np.array([[z0, y0, x0], [z1, y1, x1]], dtype=np.float64),
            model_to_original(points[:, :3], self.grid),
            np.rint(points[:, 3]).astype(np.int64),
            min_overlap=self.window_overlap,
            device=self.device,
            precision=self.precision,
        )
        if windowed is None:
            return None
        record.windows = windowed
        record.seconds["windows"] = windowed.seconds
        record.seconds["total"] += windowed.seconds
        self._cost["n_windows"] += windowed.n_run
        self._cost["window_seconds"] += windowed.seconds
        log.info(
            "an object larger than one %d^3 crop: %d windows planned, %d run, %.2f s",
            self.size,
            len(windowed.boxes),
            windowed.n_run,
            windowed.seconds,
        )
        return windowed.mask > 0

    def cost(self) -> dict[str, float]:
        return {
            "n_windows": int(self._cost["n_windows"]),
            "window_seconds": round(float(self._cost["window_seconds"]), 3),
            "encode_seconds": round(float(self._cost["encode_seconds"]), 3),
        }

    def close(self) -> None:
        self._crop = None


class Sam3dPromptable(PromptableModel):
    """SAM-Med3D (medim's classes, :mod:`medsegflow.sam3d.model`) as a promptable model."""

    kind: ClassVar[str] = "sam3d"
    dims: ClassVar[int] = 3
    native_prompts: ClassVar[frozenset[str]] = frozenset({"points3d"})

    def __init__(
        self,
        network: Any,
        *,
        spec: Any = "turbo",
        checkpoint: str | None = None,
        device: str | None = None,
        precision: str = "fp32",
        crop_centre: str = "first_click",
        window_overlap: float | None = None,
        resample_grid: str = "torchio",
    ) -> None:
        self.network = network
        self.spec = spec
        self.checkpoint = checkpoint
        self.device = device
        self.precision = precision
        self.crop_centre = crop_centre
        self.window_overlap = window_overlap
        self.resample_grid = resample_grid

    @classmethod
    def build(
        cls,
        spec: Mapping[str, Any],
        checkpoint: str | os.PathLike | None,
        *,
        device: str | None = None,
        precision: str = "auto",
        encoder: bool = True,
    ) -> Sam3dPromptable:
        """From a ``sam3d`` method's config (schema-completed: ``spec``, ``precision``,
        ``crop_centre``, ``windows``, ``resample_grid``) and a checkpoint in either
        official layout (:func:`~medsegflow.sam3d.model.load_checkpoint`, strict).
        ``precision`` applies only where the method has none (the schema's default is
        fp32, as the official script runs)."""
        from medsegflow.sam3d.model import load_checkpoint

        if checkpoint is None:
            raise ValueError("SAM-Med3D needs a checkpoint")
        windows = spec.get("windows") or {}
        device = device or spec.get("device")
        return cls(
            load_checkpoint(checkpoint, spec.get("spec", "turbo"), device=device),
            spec=spec.get("spec", "turbo"),
            checkpoint=str(checkpoint),
            device=device,
            precision=spec.get("precision", precision),
            crop_centre=spec.get("crop_centre", "first_click"),
            window_overlap=float(windows["min_overlap"]) if windows.get("enabled") else None,
            resample_grid=spec.get("resample_grid", "torchio"),
        )

    def describe(self) -> dict[str, Any]:
        from medsegflow.sam3d.preprocess import grid_provenance

        return {
            "family": self.kind,
            "spec": self.spec if isinstance(self.spec, str) else dict(self.spec),
            "checkpoint": self.checkpoint,
            "image_size": int(self.network.image_encoder.img_size),
            "precision": self.precision,
            "crop_centre": self.crop_centre,
            "window_overlap": self.window_overlap,
            **grid_provenance(self.resample_grid),
        }

    def count_parameters(self) -> int | None:
        from medsegflow.sam3d.model import count_parameters

        return count_parameters(self.network)[0]

    def session_on(self, grid: ModelGrid, **options: Any) -> Sam3dSession:
        """A session on an image already in the model frame (``options`` over the
        model's: ``object_ijk``, ``crop_centre``, ``window_overlap``)."""
        settings = {
            "device": self.device,
            "precision": self.precision,
            "crop_centre": self.crop_centre,
            "window_overlap": self.window_overlap,
            **options,
        }
        return Sam3dSession(self.network, grid, **settings)

    def start_session(
        self,
        image_zyx: np.ndarray,
        *,
        spacing_zyx: tuple[float, float, float],
        geometry: Geometry | None = None,
    ) -> Sam3dSession:
        if geometry is None:
            geometry = Geometry(tuple(float(v) for v in spacing_zyx[::-1]))
        grid = to_model_grid(Volume(image_zyx, geometry), resample_grid=self.resample_grid)
        return self.session_on(grid)
