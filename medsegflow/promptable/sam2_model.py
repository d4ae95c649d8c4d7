"""The ``sam2`` family's promptable model: SAM 2.1 and MedSAM2 on the official ``sam2``
package, behind :class:`~medsegflow.promptable.interface.PromptableModel`.

Everything a model does here is the package's own code; this module only feeds it:

- **building**: the package's hydra config (a name inside the package, such as
  ``configs/sam2.1/sam2.1_hiera_t.yaml``, or a path to a config file, such as MedSAM2's
  ``sam2.1_hiera_t512.yaml``), with optional hydra ``overrides``, built by
  ``sam2.build_sam.build_sam2`` (2D) or ``build_sam2_video_predictor`` (3D) and loaded by
  the package's loader (``sam2.build_sam._load_checkpoint``: ``torch.load(...,
  weights_only=True)["model"]``, strict keys). A bad checkpoint is one line naming the file
  (:class:`~medsegflow.errors.InputError`).
- **2D** (:meth:`Sam2Promptable.encode_slices`, :meth:`Sam2Promptable.decode`): the
  package's ``SAM2ImagePredictor``. Encoding is its ``set_image_batch``; the cache stores
  what it keeps, ``image_embed`` ``(C, S/16, S/16)`` and the two high-resolution maps
  ``high_res_feats_0`` ``(C/8, S/4, S/4)`` and ``high_res_feats_1`` ``(C/4, S/8, S/8)``.
  Decoding puts one slice's cached features back into a predictor and calls its
  ``predict`` (boxes, points, the previous low-res logits as ``mask_input``; with
  ``multimask`` the output of highest predicted IoU is kept): the masks are the
  predictor's, at the original size. The one change to the predictor: its feature-grid
  sizes ``_bb_feat_sizes`` are hard-coded for 1024 inputs; they are set from the model's
  ``image_size`` (the same values at 1024; MedSAM2's 512 and the test's small models need
  it).
- **3D, MedSAM2's protocol** (:meth:`Sam2Promptable.propagate_from_key_slice`): the
  package's ``SAM2VideoPredictor``, the box on the key slice, propagated forward, then the
  state reset, the box again and propagated backward, the two passes' masks joined, as
  ``medsam2_infer_3D_CT.py`` of bowang-lab/MedSAM2 does. Frames are prepared as that
  script does: each uint8 slice made RGB and resized to the model's side by PIL (its
  default filter), divided by 255 (float64), ImageNet mean and std subtracted and divided,
  the frames handed over as one tensor. Where the PyPI package forces a difference:
  its ``init_state`` reads JPEG folders or MP4 files only (MedSAM2's fork takes the
  tensor), so the package's own ``init_state`` runs with its frame loader replaced by
  these frames (:func:`_frames_given`). docs/families/sam2.md lists the other differences.

torch, hydra and sam2 are imported lazily.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from medsegflow.errors import ConfigError, InputError
from medsegflow.promptable.interface import Decoded, Prompt2D, PromptableModel, SliceFeatures

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

IMAGE_EMBED = "image_embed"
HIGH_RES = ("high_res_feats_0", "high_res_feats_1")
"""The cached arrays: ``SAM2ImagePredictor._features`` by name."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The frame normalisation of the package's ``load_video_frames`` and MedSAM2's script."""


def _one_line(err: BaseException, limit: int = 200) -> str:
    return " ".join(str(err).split())[:limit] or type(err).__name__


@contextlib.contextmanager
def _hydra_config(config: str) -> Iterator[str]:
    """The hydra config name to compose for ``config``: a name inside the ``sam2`` package
    as it is, or a config file's stem with its folder as hydra's config dir (the
    package's own config module is restored afterwards)."""
    try:
        import sam2  # noqa: F401 - initialises hydra with the package's config module
    except ImportError as err:
        raise ConfigError(
            f"the sam2 family needs the sam2 package ({_one_line(err)}); install it with "
            "pip install --no-build-isolation -e '.[sam2]' (README, docs/families/sam2.md)"
        ) from None
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    path = Path(config)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        yield config
        return
    instance = GlobalHydra.instance()
    saved = instance.hydra
    instance.clear()
    try:
        with initialize_config_dir(config_dir=str(path.resolve().parent), version_base="1.2"):
            yield path.stem
    finally:
        GlobalHydra.instance().clear()
        GlobalHydra.instance().hydra = saved


def _checkpoint_problem(checkpoint: Path, model: torch.nn.Module) -> str:
    """Why the package's loader refused ``checkpoint`` for ``model``, in a few words."""
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for damaged files
        return f"cannot read it ({_one_line(err)})"
    if not isinstance(state, Mapping) or "model" not in state:
        keys = list(state)[:3] if isinstance(state, Mapping) else type(state).__name__
        return f"no 'model' entry (the official layout is {{'model': state_dict}}; found {keys})"
    if not isinstance(state["model"], Mapping):
        return f"its 'model' entry is a {type(state['model']).__name__}, not a state dict"
    have, want = set(state["model"]), set(model.state_dict())
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} keys missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
        return "; ".join(parts)
    return "tensor shapes differ from the config's network"


def build_sam2_network(
    config: str,
    checkpoint: str | os.PathLike | None,
    *,
    overrides: Sequence[str] = (),
    video: bool = False,
    device: str = "cpu",
) -> torch.nn.Module:
    """The network of hydra ``config`` (+ ``overrides``) by the package's builder
    (``build_sam2``, or ``build_sam2_video_predictor`` for ``video``), with the weights at
    ``checkpoint`` loaded by the package's loader (strict keys).

    Raises :class:`ConfigError` naming the config when hydra cannot compose or build it,
    :class:`InputError` naming a config file that is not there, or the checkpoint when it
    is missing or does not fit.
    """
    from sam2.build_sam import _load_checkpoint, build_sam2, build_sam2_video_predictor

    builder = build_sam2_video_predictor if video else build_sam2
    if Path(config).is_absolute() and not Path(config).is_file():
        raise InputError(f"{config}: sam2 config file not found")
    try:
        with _hydra_config(config) as name:
            model = builder(
                name, ckpt_path=None, device=device, hydra_overrides_extra=list(overrides)
            )
    except Exception as err:  # hydra and instantiate raise many types
        raise ConfigError(f"sam2 config {config}: cannot build it ({_one_line(err)})") from None
    if checkpoint is None:
        return model
    path = Path(checkpoint)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            level = logging.root.manager.disable
            logging.disable(logging.ERROR)  # the loader logs the key lists before raising
            try:
                _load_checkpoint(model, str(path))
            finally:
                logging.disable(level)
    except Exception:
        raise InputError(
            f"{path}: not a SAM 2 checkpoint of config {config}: {_checkpoint_problem(path, model)}"
        ) from None
    return model


@contextlib.contextmanager
def _frames_given(frames: torch.Tensor, height: int, width: int) -> Iterator[None]:
    """The package's ``init_state`` with ``frames`` (``(Z, 3, S, S)``, normalised) in place
    of its JPEG/MP4 loader, as MedSAM2's ``init_state(images, H, W)`` takes them."""
    import sam2.sam2_video_predictor as video_module

    loader = video_module.load_video_frames

    def given(**_: Any) -> tuple[torch.Tensor, int, int]:
        return frames, height, width

    video_module.load_video_frames = given
    try:
        yield
    finally:
        video_module.load_video_frames = loader


def medsam2_frames(image_zyx: np.ndarray, image_size: int) -> np.ndarray:
    """MedSAM2's frames of a uint8 volume (``(Z, H, W)`` grey or ``(Z, H, W, 3)``): each
    slice RGB, resized to ``image_size`` squared by PIL's default filter, ``/ 255``, minus
    the ImageNet mean, over its std; float64 ``(Z, 3, S, S)`` as the script computes it."""
    from PIL import Image

    if image_zyx.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {image_zyx.dtype}")
    out = np.zeros((len(image_zyx), 3, image_size, image_size))
    for i, slice_ in enumerate(image_zyx):
        rgb = Image.fromarray(slice_).convert("RGB").resize((image_size, image_size))
        out[i] = np.asarray(rgb).transpose(2, 0, 1)
    out /= 255.0
    out -= np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    out /= np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]
    return out


class Sam2Promptable(PromptableModel):
    """A SAM 2 network of the ``sam2`` package.

    Attributes:
        config: the hydra config (package name or file path); ``overrides`` its hydra
            overrides.
        checkpoint: the weights (``{"model": state_dict}``).
        device: where it runs; ``precision`` what the encoder runs in.
        net: the image model (``SAM2Base``), built on first use; ``video`` the video
            predictor, built on first use of the 3D protocol.
        largest_component: keep the largest 3D connected component of a propagated object
            (MedSAM2's script does).
    """

    kind: ClassVar[str] = "sam2"
    dims: ClassVar[int] = 2
    native_prompts: ClassVar[frozenset[str]] = frozenset(
        {"box", "points", "logits", "key_slice_box"}
    )

    def __init__(
        self,
        *,
        config: str,
        checkpoint: str | os.PathLike | None,
        overrides: Sequence[str] = (),
        device: str | None = None,
        precision: str = "auto",
        largest_component: bool = True,
    ) -> None:
        import torch

        from medsegflow.precision import resolve_precision

        self.config = str(config)
        self.overrides = [str(o) for o in overrides]
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.requested = precision
        self.precision = resolve_precision(precision, self.device)
        self.largest_component = bool(largest_component)
        self._net: torch.nn.Module | None = None
        self._video: torch.nn.Module | None = None
        self._predictor: Any = None

    @classmethod
    def build(
        cls,
        spec: Mapping[str, Any],
        checkpoint: str | os.PathLike | None,
        *,
        device: str | None = None,
        precision: str = "auto",
        encoder: bool = True,
    ) -> Sam2Promptable:
        """The model of ``spec`` (a ``sam_models`` entry, or a cache's ``model.json``):
        ``config`` (required), ``overrides``, ``largest_component``. The image model is
        built and loaded at once (a bad config or checkpoint stops here); ``encoder`` is
        accepted for the interface (SAM 2's decoder needs no part of the encoder, but the
        package builds the whole network)."""
        if not spec.get("config"):
            raise ConfigError("sam2: a sam2 model needs config (a sam2 package config or file)")
        model = cls(
            config=spec["config"],
            checkpoint=checkpoint,
            overrides=spec.get("overrides") or (),
            device=device,
            precision=precision,
            largest_component=spec.get("largest_component", True),
        )
        _ = model.net
        return model

    @property
    def net(self) -> torch.nn.Module:
        """The image model (``SAM2Base``), built by ``build_sam2``."""
        if self._net is None:
            self._net = build_sam2_network(
                self.config, self.checkpoint, overrides=self.overrides, device=str(self.device)
            )
        return self._net

    @property
    def video(self) -> torch.nn.Module:
        """The video predictor, built by ``build_sam2_video_predictor``."""
        if self._video is None:
            self._video = build_sam2_network(
                self.config,
                self.checkpoint,
                overrides=self.overrides,
                video=True,
                device=str(self.device),
            )
        return self._video

    @property
    def image_size(self) -> int:  # type: ignore[override]
        """The side of the square input (1024 for SAM 2.1, 512 for MedSAM2)."""
        return int(self.net.image_size)

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.kind,
            "arch": Path(self.config).stem,
            "config": self.config,
            "overrides": list(self.overrides),
            "checkpoint": self.checkpoint,
            "image_size": self.image_size,
            "precision": self.precision,
            "largest_component": self.largest_component,
        }

    def count_parameters(self) -> int | None:
        return int(sum(p.numel() for p in self.net.parameters()))

    # --- 2D ---------------------------------------------------------------------------

    def predictor(self) -> Any:
        """The ``SAM2ImagePredictor`` of :attr:`net` (made once: it scripts its transforms),
        its feature-grid sizes from the model's input side (the package hard-codes them for
        1024)."""
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        if self._predictor is None:
            predictor = SAM2ImagePredictor(self.net, mask_threshold=self.mask_threshold)
            side = self.image_size
            predictor._bb_feat_sizes = [(side // 4, side // 4), (side // 8, side // 8)] + [
                (side // 16, side // 16)
            ]
            self._predictor = predictor
        return self._predictor

    def encode_slices(self, slices: np.ndarray, *, batch_size: int = 1) -> SliceFeatures:
        """``SAM2ImagePredictor.set_image_batch`` of the slices (grey made RGB), in
        batches of ``batch_size``; float32 features (float16 after a 16-bit autocast)."""
        import torch
        from tqdm import tqdm

        from medsegflow.precision import autocast

        if slices.ndim == 3:
            slices = np.repeat(slices[..., None], 3, axis=-1)
        if slices.ndim != 4 or slices.shape[-1] != 3 or slices.dtype != np.uint8:
            raise ValueError(f"slices must be uint8 (N, H, W[, 3]), got {slices.shape}")
        predictor = self.predictor()
        names = (*HIGH_RES, IMAGE_EMBED)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        tic = time.perf_counter()
        with torch.inference_mode(), autocast(self.device, self.requested):
            sixteen = torch.is_autocast_enabled(self.device.type)
            dtype = np.float16 if sixteen else np.float32
            for start in tqdm(
                range(0, len(slices), batch_size), desc="sam2 encode", unit="batch", leave=False
            ):
                predictor.set_image_batch(list(slices[start : start + batch_size]))
                feats = [*predictor._features["high_res_feats"], predictor._features[IMAGE_EMBED]]
                for name, feat in zip(names, feats, strict=True):
                    parts[name].append(feat.float().cpu().numpy().astype(dtype))
        log.debug("sam2: encoded %d slices in %.2f s", len(slices), time.perf_counter() - tic)
        original_size = (int(slices.shape[1]), int(slices.shape[2]))
        return SliceFeatures(
            {name: np.concatenate(arrays) for name, arrays in parts.items()},
            original_size=original_size,
            input_size=(self.image_size, self.image_size),
            image_size=self.image_size,
        )

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
        """``SAM2ImagePredictor.predict`` on one slice's cached features, prompts of one
        signature in batches of up to ``batch_size`` (the predictor's batched prompts);
        the decoder runs in the precision the cache's encoder ran in."""
        import torch

        from medsegflow.precision import autocast

        if not prompts:
            raise ValueError("sam2 decode: no prompts")
        if all_masks and not multimask:
            raise ValueError("sam2 decode: all_masks needs multimask=True")
        predictor = self.predictor()
        with torch.inference_mode():
            predictor._features = {
                IMAGE_EMBED: _tensor(features[IMAGE_EMBED], self.device),
                "high_res_feats": [_tensor(features[name], self.device) for name in HIGH_RES],
            }
        predictor._orig_hw = [tuple(int(s) for s in original_size)]
        predictor._is_image_set = True
        per_prompt = 3 if all_masks else 1
        rows = len(prompts) * per_prompt
        height, width = (int(s) for s in original_size)
        low = self.image_size // 4
        out = Decoded(
            np.zeros((rows, height, width), np.float32),
            np.zeros((rows, 1, low, low), np.float32),
            np.zeros(rows, np.float32),
            self.mask_threshold,
        )
        groups: dict[tuple[bool, int], list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(prompt.signature, []).append(i)
        with torch.inference_mode(), autocast(self.device, self.precision):
            for members in groups.values():
                for start in range(0, len(members), batch_size):
                    idx = members[start : start + batch_size]
                    logits, low_res, iou = self._predict(
                        predictor,
                        [prompts[i] for i in idx],
                        multimask=multimask,
                        mask_inputs=None if mask_inputs is None else mask_inputs[idx],
                        all_masks=all_masks,
                    )
                    out_rows = [per_prompt * i + j for i in idx for j in range(per_prompt)]
                    out.logits_pyx[out_rows], out.low_res_pchw[out_rows] = logits, low_res
                    out.iou_p[out_rows] = iou
        return out

    @staticmethod
    def _predict(
        predictor: Any,
        prompts: Sequence[Prompt2D],
        *,
        multimask: bool,
        mask_inputs: np.ndarray | None,
        all_masks: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One batched ``predictor.predict`` call; (logits, low-res logits, iou) rows."""
        n = len(prompts)
        box = None
        if prompts[0].box_xyxy is not None:
            box = np.stack([np.asarray(p.box_xyxy, dtype=np.float64) for p in prompts])
        coords = labels = None
        if len(prompts[0].points_xyl):
            xyl = np.stack([np.asarray(p.points_xyl, dtype=np.float64) for p in prompts])
            coords, labels = xyl[:, :, :2], xyl[:, :, 2].astype(np.int64)
        masks, iou, low_res = predictor.predict(
            point_coords=coords,
            point_labels=labels,
            box=box,
            mask_input=None if mask_inputs is None else np.asarray(mask_inputs, np.float32),
            multimask_output=multimask,
            return_logits=True,
        )
        # predict squeezes the prompt axis of a single prompt: (K, H, W) -> (1, K, H, W)
        masks = masks.reshape(n, -1, *masks.shape[-2:])
        low_res = low_res.reshape(n, -1, *low_res.shape[-2:])
        iou = iou.reshape(n, -1)
        if all_masks:
            return (
                masks.reshape(-1, *masks.shape[-2:]),
                low_res.reshape(-1, 1, *low_res.shape[-2:]),
                iou.reshape(-1),
            )
        choice = iou.argmax(axis=1) if multimask else np.zeros(n, dtype=np.int64)
        rows = np.arange(n)
        return masks[rows, choice], low_res[rows, choice][:, None], iou[rows, choice]

    def box_to_original(self, box_model: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """The original-frame box that the predictor maps to ``box_model``: its transform
        stretches each axis to the square side (``x * S / W``, ``y * S / H``)."""
        height, width = (float(s) for s in original_size)
        scale = np.array([width, height, width, height]) / self.image_size
        return np.asarray(box_model, dtype=np.float64) * scale

    # --- 3D: MedSAM2's key-slice protocol ----------------------------------------------

    def propagate_from_key_slice(
        self,
        image_zyx: np.ndarray,
        *,
        z: int,
        box_xyxy: np.ndarray,
        z_range: tuple[int, int],
    ) -> dict[int, np.ndarray]:
        """MedSAM2's 3D inference on the slices ``z_range`` (inclusive) of a uint8 volume:
        the video predictor with the box on key slice ``z``, propagated forward, reset,
        the box again and propagated backward; a slice is foreground where either pass
        gives a logit > 0; then (``largest_component``) the largest 3D component."""
        import torch

        from medsegflow.components import largest_component
        from medsegflow.precision import autocast

        z0, z1 = (int(v) for v in z_range)
        if not z0 <= int(z) <= z1 or z0 < 0 or z1 >= len(image_zyx):
            raise ValueError(f"key slice {z} outside z range {z_range} of {len(image_zyx)} slices")
        tic = time.perf_counter()
        frames_np = medsam2_frames(np.ascontiguousarray(image_zyx[z0 : z1 + 1]), self.image_size)
        height, width = (int(s) for s in image_zyx.shape[1:3])
        predictor = self.video
        segs = np.zeros((z1 - z0 + 1, height, width), dtype=bool)
        key = int(z) - z0
        box = np.asarray(box_xyxy, dtype=np.float64)
        with (
            torch.inference_mode(),
            autocast(self.device, self.precision),
            warnings.catch_warnings(),
        ):
            # without the CUDA extension the package skips its small-hole filling and warns
            warnings.filterwarnings("ignore", message="(?s).*Skipping the post-processing")
            frames = torch.from_numpy(frames_np).to(self.device)
            with _frames_given(frames, height, width):
                state = predictor.init_state(video_path="<frames>")
            for reverse in (False, True):
                predictor.add_new_points_or_box(
                    inference_state=state, frame_idx=key, obj_id=1, box=box
                )
                for frame, _, logits in predictor.propagate_in_video(state, reverse=reverse):
                    segs[frame] |= (logits[0] > 0.0).cpu().numpy()[0]
                predictor.reset_state(state)
        if self.largest_component and segs.any():
            segs = largest_component(segs)
        log.debug(
            "sam2: propagated %d slices from key slice %d in %.2f s",
            len(segs),
            z,
            time.perf_counter() - tic,
        )
        return {z0 + i: segs[i] for i in range(len(segs))}


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A cached ``(C, h, w)`` feature as the predictor keeps it: ``(1, C, h, w)`` float32."""
    import torch

    return torch.from_numpy(np.asarray(array, dtype=np.float32))[None].to(device)
