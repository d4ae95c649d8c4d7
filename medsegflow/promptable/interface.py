"""One interface for promptable segmentation models.

Every promptable family (SAM, MedSAM, LiteMedSAM and the SAMs fine-tuned here, SAM-Med3D,
SAM 2.1 / MedSAM2, nnInteractive) implements :class:`PromptableModel`. The shared stages
use only this interface, never a model's own classes:

- the embedding cache (``results/embeddings/{dataset}/{model}/``): :meth:`encode_slices`
  of a 2D model, stored as named arrays (:class:`SliceFeatures`);
- prompt decoding on a slice: :meth:`decode` (boxes, points, the previous logits);
- 3D propagation of a box3d prompt: the harness's own slice-by-slice propagation with
  :meth:`decode` (:meth:`propagation_box_rule`), or the model's own
  (:meth:`propagate_from_key_slice`, where ``"key_slice_box"`` is a native prompt);
- the interactive protocol of 3D models: :meth:`start_session` and
  :meth:`VolumeSession.interact` with :class:`Interaction` s of the simulated user;
- the cost table: :meth:`describe` and :meth:`count_parameters`.

Additions since the first version (2D SAM port): :meth:`PromptableModel.build` takes
``encoder`` (False: decoding cached features only); :meth:`PromptableModel.box_to_original`
(the ``resized`` box-propagation rule); :attr:`PromptableModel.image_size`;
:meth:`describe` is what the embedding cache's ``model.json`` records (with ``family``).

Coordinates: 2D prompts are in the ORIGINAL slice frame (pixels, x = column, ``XYXY``
boxes, ``[x, y, label]`` points); 3D interactions in original voxel indices ``(z, y, x)``.
A model maps them into its own frame by its own recipe. torch is imported lazily by the
implementations; this module needs numpy only.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

if TYPE_CHECKING:
    from medsegflow.io import Geometry

PromptKind = Literal[
    "box",  # 2D box on a slice
    "points",  # 2D positive/negative points on a slice
    "logits",  # the previous low-resolution logits as a mask prompt (2D)
    "mask",  # a binary mask as a prompt
    "key_slice_box",  # a 2D box on a key slice, propagated by the model itself (3D)
    "box3d",  # a 3D box
    "points3d",  # 3D positive/negative clicks
    "scribble",  # a 3D scribble (a thin binary curve volume)
    "lasso",  # a closed 2D contour on a slice, filled (a binary slice mask)
]
PROMPT_KINDS: tuple[str, ...] = PromptKind.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Prompt2D:
    """One prompt on one slice, in the original slice frame.

    Attributes:
        box_xyxy: float64 ``(4,)`` ``[x_min, y_min, x_max, y_max]`` or None.
        points_xyl: ``(N, 3)`` ``[x, y, label]`` rows (label 1 positive, 0 negative); N may
            be 0 when there is a box.
    """

    box_xyxy: np.ndarray | None
    points_xyl: np.ndarray

    @property
    def signature(self) -> tuple[bool, int]:
        """Prompts with equal signatures can be decoded in one batch."""
        return self.box_xyxy is not None, len(self.points_xyl)


@dataclass
class Decoded:
    """Decoder output for ``P`` prompts of one slice (or ``3 P`` rows with ``all_masks``).

    Attributes:
        logits_pyx: float32 ``(P, H, W)`` mask logits in the original slice frame.
        low_res_pchw: float32 ``(P, 1, h, w)`` low-resolution logits in the model's frame,
            the ``mask_inputs`` of a next round (the model's "previous logits").
        iou_p: float32 ``(P,)`` the model's predicted quality of each mask.
        threshold: foreground is ``logits > threshold``.
    """

    logits_pyx: np.ndarray
    low_res_pchw: np.ndarray
    iou_p: np.ndarray
    threshold: float

    @property
    def masks_pyx(self) -> np.ndarray:
        """bool ``(P, H, W)`` foreground masks."""
        return self.logits_pyx > self.threshold

    @property
    def probs_pyx(self) -> np.ndarray:
        """float32 ``(P, H, W)`` foreground probabilities (sigmoid of the logits)."""
        return (0.5 * (1.0 + np.tanh(0.5 * self.logits_pyx))).astype(np.float32)


@dataclass
class SliceFeatures:
    """What a 2D model's encoder made of ``N`` slices: named float arrays, each ``(N, ...)``.

    ``arrays`` is what the embedding cache stores (SAM: ``{"embeddings": (N, 256, 64, 64)}``;
    SAM 2.1 adds its high-resolution features). ``input_size`` is the ``(h, w)`` of a
    resized slice inside the model's input, ``image_size`` the input's side.
    """

    arrays: dict[str, np.ndarray]
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    image_size: int

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def row(self, index: int) -> dict[str, np.ndarray]:
        """The features of one slice: each array's row ``index`` (no leading axis)."""
        return {name: array[index] for name, array in self.arrays.items()}


@dataclass(frozen=True)
class Interaction:
    """One interaction of the (simulated) user with a 3D session, in original voxel indices.

    Attributes:
        kind: ``"points3d"`` (one click ``point_zyx``), ``"box3d"`` (``box_zyxzyx``
            ``[z0, y0, x0, z1, y1, x1]``, inclusive), ``"key_slice_box"`` (``box_xyxy`` on
            slice ``z``), ``"scribble"`` or ``"lasso"`` (``mask_zyx``, bool, the case's shape).
        positive: include (True) or exclude (False).
    """

    kind: str
    positive: bool = True
    point_zyx: tuple[int, int, int] | None = None
    box_zyxzyx: tuple[int, int, int, int, int, int] | None = None
    box_xyxy: tuple[float, float, float, float] | None = None
    z: int | None = None
    mask_zyx: np.ndarray | None = field(default=None, repr=False)
    frame_index: tuple[int, ...] | None = None
    """Added for the generic 3D protocol (:mod:`medsegflow.promptable.volume_protocol`): a
    click the simulated user placed in the session's own frame (:class:`UserFrame`), as an
    index of the frame :meth:`VolumeSession.user_frame` last returned. The session then
    uses it exactly (no round trip through original voxels); ``point_zyx`` holds the same
    click rounded to original voxel indices, for the record. None: use ``point_zyx``."""


@dataclass
class UserFrame:
    """The grid the simulated user looks at, when a session wants the user to act in its
    own frame (:meth:`VolumeSession.user_frame`).

    SAM-Med3D's official protocol samples its clicks from the reference resampled to its
    1.5 mm model frame and cut to its 128^3 crop, not on the original grid; reproducing
    its outputs needs the same user. A session that has no such frame returns None, and
    the user acts on the original grid with the session's masks.

    Attributes:
        reference: bool, the object's reference in this frame (empty: the object is not
            visible in it, and the protocol skips it).
        prediction: bool, the session's current mask in this frame (same shape), or None
            before the first interaction.
        to_original: frame indices ``(N, ndim)`` -> original voxel indices ``(N, 3)``
            ``zyx`` (float): where a click placed at those indices is, for the record.
    """

    reference: np.ndarray
    prediction: np.ndarray | None
    to_original: Callable[[np.ndarray], np.ndarray]


class VolumeSession(ABC):
    """A 3D model's state on one image: the image encoded once, then one object at a time.

    Besides :meth:`reset` and :meth:`interact`, three optional capabilities serve the
    generic interactive protocol (:mod:`medsegflow.promptable.volume_protocol`), each
    with a default that needs nothing from the model: :meth:`user_frame` (the frame the
    simulated user clicks in), :meth:`finish` (a final mask of the model's own after an
    object's last interaction) and :meth:`cost` (per-case numbers for the prediction
    table). No protocol code checks a model's name.
    """

    @abstractmethod
    def reset(self) -> None:
        """Start a new object (forget the interactions, keep the image)."""

    @abstractmethod
    def interact(self, interaction: Interaction) -> np.ndarray:
        """Add one interaction; the object's bool ``(Z, Y, X)`` mask after it."""

    def close(self) -> None:  # noqa: B027 - optional
        """Free what the session holds."""

    def user_frame(self, reference_zyx: np.ndarray) -> UserFrame | None:
        """The frame in which the simulated user should see the current object and click,
        given its reference on the original grid (bool ``(Z, Y, X)``); None (the default):
        the original grid and the masks :meth:`interact` returns. A session returning a
        frame takes the user's clicks in it (:attr:`Interaction.frame_index`). The frame
        may change after an interaction (SAM-Med3D: the whole 1.5 mm grid before the first
        click, its crop after); the protocol asks again before every click. A session may
        read the reference only for what its official protocol does with it (SAM-Med3D's
        ``crop_centre: gt_centre`` oracle), and must say so in its docs."""
        return None

    def finish(self, box: Interaction) -> np.ndarray | None:
        """After an object's last interaction: a final bool ``(Z, Y, X)`` mask of the
        model's own, or None (the default) to keep the last interaction's. ``box`` is the
        object's 3D box (kind ``box3d``): its prompt's when the first interaction was a
        box, otherwise the reference's tight box (an oracle extent, as a box prompt gives
        it). SAM-Med3D uses it for sliding windows over objects larger than one crop."""
        return None

    def cost(self) -> dict[str, float]:
        """Numbers the session accumulated over its objects (seconds, model calls), added
        as columns of the prediction table per case; the default has none."""
        return {}


class PromptableModel(ABC):
    """A promptable model built from config and weights.

    Class attributes:
        kind: its family's name (the registry's key).
        dims: 2 (encodes slices; the harness propagates through volumes) or 3 (encodes a
            volume: :meth:`start_session`).
        native_prompts: the :data:`PromptKind` s the model takes itself (an instance may
            narrow them, e.g. the generic predictor's ``own_propagation=False``).
    """

    kind: ClassVar[str]
    dims: ClassVar[int]
    native_prompts: ClassVar[frozenset[str]]

    precision: str = "fp32"
    """What its encoder runs in (``fp32``/``bf16``/``fp16``): recorded in the cache."""
    mask_threshold: float = 0.0
    image_size: int = 0
    """A 2D model's square input side (the cache checks its features were made at it;
    0: not checked)."""

    @classmethod
    @abstractmethod
    def build(
        cls,
        spec: Mapping[str, Any],
        checkpoint: str | os.PathLike | None,
        *,
        device: str | None = None,
        precision: str = "auto",
        encoder: bool = True,
    ) -> PromptableModel:
        """The model of config entry ``spec`` with the weights at ``checkpoint`` (the
        official format, loaded by the official loading code); ``precision`` as
        :func:`medsegflow.precision.resolve_precision` resolves it. ``spec`` is the
        ``sam_models`` entry (its ``arch`` resolved) or, for decoding from a cache, the
        cache's ``model.json`` (:meth:`describe`). ``encoder=False`` (2D models): only
        what decoding cached features needs (a model may still build its encoder)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-serialisable facts of the model (arch, checkpoint, image size, precision):
        the cache's ``model.json``, the model card and the cost table read them."""

    def count_parameters(self) -> int | None:
        """Parameters of the network, for the cost table (None: unknown)."""
        return None

    # --- 2D models -------------------------------------------------------------------

    def encode_slices(self, slices: np.ndarray, *, batch_size: int = 1) -> SliceFeatures:
        """The encoder's features of ``N`` uint8 slices (``(N, H, W)`` grey or
        ``(N, H, W, 3)`` RGB), by the model's own input recipe."""
        raise NotImplementedError(f"{self.kind}: not a 2D model")

    def decode(
        self,
        features: Mapping[str, np.ndarray],
        prompts: Sequence[Prompt2D],
        *,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
        multimask: bool,
        mask_inputs: np.ndarray | None = None,
        all_masks: bool = False,
        batch_size: int = 64,
    ) -> Decoded:
        """Decode ``prompts`` on one slice from its features (:meth:`SliceFeatures.row`).
        ``mask_inputs``: ``(P, 1, h, w)`` previous low-res logits; ``all_masks``: every
        output of every prompt (``3 P`` rows, prompt-major)."""
        raise NotImplementedError(f"{self.kind}: not a 2D model")

    def propagation_box_rule(self) -> str:
        """``resized`` or ``original``: how the harness's box propagation measures a
        neighbour's box for this model (``auto`` resolves to this)."""
        return "original"

    def box_to_original(self, box_model: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """A box in the original slice frame that the model maps to exactly the
        model-frame ``box_model``: what the ``resized`` propagation rule needs (a model
        whose :meth:`propagation_box_rule` can be ``resized`` implements it)."""
        raise NotImplementedError(f"{self.kind}: no model frame for boxes")

    def propagate_from_key_slice(
        self,
        image_zyx: np.ndarray,
        *,
        z: int,
        box_xyxy: np.ndarray,
        z_range: tuple[int, int],
    ) -> dict[int, np.ndarray]:
        """A model's own propagation of a box on key slice ``z`` through ``z_range``
        (inclusive): ``{z: bool (H, W) mask}``. Only where ``"key_slice_box"`` is native."""
        raise NotImplementedError(f"{self.kind}: no propagation of its own")

    # --- 3D models -------------------------------------------------------------------

    def start_session(
        self,
        image_zyx: np.ndarray,
        *,
        spacing_zyx: tuple[float, float, float],
        geometry: Geometry | None = None,
    ) -> VolumeSession:
        """Encode a volume (original intensities) once; a session to segment its objects.

        ``geometry`` (added with the generic 3D protocol, which always passes it): the
        image's full :class:`~medsegflow.io.Geometry` (origin and direction besides the
        spacing), for models whose recipe depends on the orientation (SAM-Med3D's RAS
        canonical frame). Implementations must accept it; ``None``: unknown (identity
        direction)."""
        raise NotImplementedError(f"{self.kind}: not a 3D model")
