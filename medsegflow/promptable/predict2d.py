"""The generic 2D promptable predictor: prompted prediction from cached slice features.

:func:`predict_promptable_2d` serves every method whose ``model:`` names a ``sam_models``
entry: the entry's ``family`` (recorded in the cache's ``model.json``) names the
promptable family whose :class:`~medsegflow.promptable.interface.PromptableModel` class
builds the model (:func:`load_cached_model`); everything here goes through that
interface (:meth:`~PromptableModel.decode`, :meth:`~PromptableModel.propagation_box_rule`,
:meth:`~PromptableModel.propagate_from_key_slice`), never a model's own classes.

For each case of the requested splits, the case's cached features
(``results/embeddings/{dataset}/{model}/{case_id}.npz``) are loaded and every prompt of
the prompt set is decoded on its slice (:meth:`PromptableModel.decode`), a 3D
volume slice by slice with per-slice prompts. Per object (``prompt_id``):

1. each repeated draw is decoded (``multimask``: 3 masks, the highest predicted IoU wins);
2. optionally refined by ``clicks.rounds`` simulated corrective clicks against the
   cleaned reference label of that slice (oracle, like the prompts);
3. the repeats are combined by ``voting`` (:mod:`medsegflow.prompts.voting`).

With a box3d prompt set, objects are propagated from their middle slice instead
(:mod:`medsegflow.promptable.propagate2d`; by the model itself where ``"key_slice_box"`` is
one of its native prompts), and ``clicks3d.n`` corrective 3D clicks may follow
(the CVPR 2025 interactive protocol): the labels after the propagation and after every
click go to ``clicks/{case_id}.npz`` (:mod:`medsegflow.interactive`, step 0 the box).

Objects are painted into a label volume of the original image geometry (larger masks
first, so small objects inside large ones win) by the shared loop of
:mod:`medsegflow.prediction.cases`. With ``save_probabilities`` the objects' foreground
probabilities (the mean over the voted repeats) are kept as well and written per label
(:func:`medsegflow.prediction.painting.paint_probabilities`) to ``{case_id}_probs.npz``,
the soft outputs of the Med-SA convention. The model's family and architecture come from
the cache's ``model.json``; torch and the model's packages are imported lazily.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from medsegflow.datasets.canonical import read_label_map
from medsegflow.errors import ConfigError, InputError
from medsegflow.interactive import (
    CLICK_TABLE_COLUMNS,
    click_volumes_path,
    write_click_volumes,
)
from medsegflow.manifests import BOX_COLUMNS, parse_points
from medsegflow.models.sam_cache import (
    MODEL_INFO_FILE,
    CaseEmbeddings,
    case_embeddings_path,
    load_case_embeddings,
    model_class,
    read_model_info,
)
from medsegflow.prediction.cases import CaseInput, CasePrediction, predict_prompted_cases
from medsegflow.prediction.job import PredictJob
from medsegflow.prediction.painting import (
    ObjectMask,
    mean_probability,
    paint_objects,
    paint_probabilities,
)
from medsegflow.promptable.interface import Decoded, Prompt2D, PromptableModel
from medsegflow.promptable.propagate2d import (
    corrective_clicks,
    propagate_objects,
    propagated_objects,
    volume_rows,
)
from medsegflow.prompts.clicks import next_click
from medsegflow.prompts.points import connected_components
from medsegflow.prompts.voting import vote
from medsegflow.seeding import case_rng

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamConfig:
    """A ``family: sam`` method's decoding settings
    (``medsegflow/schemas/families/sam.schema.yaml``)."""

    multimask: bool
    voting: str
    click_rounds: int
    click_mode: str
    click_mask_input: bool
    batch_size: int
    save_probabilities: bool = False
    clicks3d: int = 0
    clicks3d_mode: str = "center"
    clicks3d_mask_input: bool = True
    propagation_box: str = "auto"


def parse_sam_config(method: Mapping[str, Any]) -> SamConfig:
    """The settings of a complete ``sam`` method (schema defaults filled in, see
    :func:`medsegflow.families.complete_method`)."""
    clicks, clicks3d = method["clicks"], method["clicks3d"]
    return SamConfig(
        multimask=method["multimask"],
        voting=method["voting"],
        click_rounds=clicks["rounds"],
        click_mode=clicks["mode"],
        click_mask_input=clicks["mask_input"],
        batch_size=method["batch_size"],
        save_probabilities=method["save_probabilities"],
        clicks3d=clicks3d["n"],
        clicks3d_mode=clicks3d["mode"],
        clicks3d_mask_input=clicks3d["mask_input"],
        propagation_box=method["propagation_box"],
    )


def row_prompt(row: Mapping[str, Any], *, source: str) -> Prompt2D:
    """A :class:`Prompt2D` from one ``prompts.tsv`` row (NaN box: none)."""
    box = np.array([row[c] for c in BOX_COLUMNS], dtype=np.float64)
    points = parse_points(row["points"], source=source)
    has_box = bool(np.isfinite(box).all())
    if not has_box and not len(points):
        raise InputError(
            f"{source}: case {row['case_id']}, z {row['z']}: prompt has no box and no point"
        )
    return Prompt2D(box if has_box else None, points)


def object_target(label_yx: np.ndarray, *, label: int, component: int) -> np.ndarray:
    """Reference mask of a prompt's object: the label's union (``component`` -1) or its
    ``component``-th 8-connected component, largest first (as the prompts were made)."""
    mask_yx = label_yx == label
    if component < 0:
        return mask_yx
    parts = connected_components(mask_yx)
    return parts[component] if component < len(parts) else np.zeros_like(mask_yx)


def refine_with_clicks(
    model: PromptableModel,
    features: Mapping[str, np.ndarray],
    prompts: Sequence[Prompt2D],
    *,
    first: Decoded,
    targets_pyx: np.ndarray,
    rounds: int,
    mode: str,
    rng: np.random.Generator,
    mask_input: bool = True,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    batch_size: int = 64,
) -> tuple[Decoded, list[Prompt2D]]:
    """``rounds`` rounds of simulated corrective clicks after the first decoding.

    Each round, every prompt whose mask still differs from its target gets one click
    (:func:`~medsegflow.prompts.clicks.next_click`: the largest error region, positive
    for a miss, negative for a false positive) appended to its points, and is decoded
    again (:meth:`PromptableModel.decode` of the slice's ``features``) with a single
    output mask (SAM's output for unambiguous, multi-prompt input) and, with
    ``mask_input``, its previous chosen low-res logits as the mask input. A prompt whose
    mask matches its target keeps it.

    Args:
        first: the round-0 decoding of ``prompts``.
        targets_pyx: bool ``(P, H, W)`` reference mask of each prompt's object (oracle).
        mode: ``"center"`` or ``"random"`` click placement.
        rng: draws of the ``"random"`` mode.
        mask_input: feed the previous low-res logits back (SAM's protocol); False decodes
            the accumulated points (and box) alone.
        sizes: ``(original_size, input_size)``.

    Returns:
        The final :class:`Decoded` and the prompts with their clicks added.
    """
    current = Decoded(
        first.logits_pyx.copy(), first.low_res_pchw.copy(), first.iou_p.copy(), first.threshold
    )
    prompts = list(prompts)
    for _ in range(rounds):
        active = []
        masks_pyx = current.masks_pyx
        for i, prompt in enumerate(prompts):
            click = next_click(masks_pyx[i], targets_pyx[i], mode=mode, rng=rng)
            if click is not None:
                points = np.concatenate([np.asarray(prompt.points_xyl).reshape(-1, 3), click[None]])
                prompts[i] = Prompt2D(prompt.box_xyxy, points)
                active.append(i)
        if not active:
            break
        again = model.decode(
            features,
            [prompts[i] for i in active],
            original_size=sizes[0],
            input_size=sizes[1],
            multimask=False,
            batch_size=batch_size,
            mask_inputs=current.low_res_pchw[active] if mask_input else None,
        )
        current.logits_pyx[active] = again.logits_pyx
        current.low_res_pchw[active] = again.low_res_pchw
        current.iou_p[active] = again.iou_p
    return current, prompts


def _slice_objects(
    model: PromptableModel,
    features: Mapping[str, np.ndarray],
    rows: pd.DataFrame,
    *,
    config: SamConfig,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    label_yx: np.ndarray | None,
    rng: np.random.Generator,
    source: str,
) -> list[ObjectMask]:
    """Decode, refine (clicks against ``label_yx``) and vote the prompts of one slice.

    With ``config.save_probabilities`` each object keeps the mean of its repeats'
    probabilities (``prob_yx``, float16), the map the ``average`` vote thresholds at 0.5.

    Args:
        rows: the prompt rows of one slice ``z``.
        sizes: ``(original_size, input_size)`` of the cached embedding.
    """
    records = rows.to_dict("records")
    prompts = [row_prompt(r, source=source) for r in records]
    original_size, input_size = sizes
    decoded = model.decode(
        features,
        prompts,
        original_size=original_size,
        input_size=input_size,
        multimask=config.multimask,
        batch_size=config.batch_size,
    )
    if config.click_rounds:
        targets = np.stack(
            [
                object_target(label_yx, label=int(r["label"]), component=int(r["component"]))
                for r in records
            ]
        )
        decoded, _ = refine_with_clicks(
            model,
            features,
            prompts,
            first=decoded,
            targets_pyx=targets,
            rounds=config.click_rounds,
            mode=config.click_mode,
            mask_input=config.click_mask_input,
            rng=rng,
            sizes=sizes,
            batch_size=config.batch_size,
        )
    masks, probs = decoded.masks_pyx, decoded.probs_pyx
    ids = rows["prompt_id"].to_numpy()
    objects = []
    for prompt_id in dict.fromkeys(ids.tolist()):
        idx = np.flatnonzero(ids == prompt_id)
        mask_yx = vote(config.voting, masks_ryx=masks[idx], probs_ryx=probs[idx])
        label = int(records[idx[0]]["label"])
        z = int(records[idx[0]]["z"])
        prob_yx = mean_probability(probs[idx]) if config.save_probabilities else None
        objects.append(ObjectMask(z, label, mask_yx, float(mask_yx.sum()), prob_yx))
    return objects


class CachedModel(NamedTuple):
    """A promptable model built for the feature cache it decodes (:func:`load_cached_model`)."""

    model: PromptableModel
    embeddings_dir: Path
    info: dict[str, object]

    @property
    def precision(self) -> str:
        """The precision the cache's encoder ran in (its ``model.json``), which the decoder
        follows, so that ``precision: fp32`` decodes in float32 on any machine; ``auto`` for a
        cache written before the precision was recorded."""
        return str(self.info.get("precision", "auto"))


def load_cached_model(
    inputs: Mapping[str, str | os.PathLike], *, device: str | None = None
) -> CachedModel:
    """The model of ``inputs["checkpoint"]`` for the cache of ``inputs["embeddings"]``.

    The cache's ``model.json`` names the promptable family's model class that made it
    (:func:`~medsegflow.models.sam_cache.model_class`) and its architecture; it must name
    the same checkpoint (:class:`InputError` naming it otherwise). That
    :class:`PromptableModel` class builds it (``encoder=False``: the features are cached)
    on ``device`` (default: CUDA when available), to decode in the precision the cache's
    encoder ran in.
    """
    embeddings_dir = Path(inputs["embeddings"]).parent
    info = read_model_info(embeddings_dir)
    if Path(str(info["checkpoint"])).resolve() != Path(inputs["checkpoint"]).resolve():
        raise InputError(
            f"{embeddings_dir / MODEL_INFO_FILE}: embeddings were made with {info['checkpoint']}, "
            f"not with {inputs['checkpoint']}; recompute them"
        )
    cls = model_class(info, source=embeddings_dir / MODEL_INFO_FILE)
    model = cls.build(
        info,
        inputs["checkpoint"],
        device=device,
        precision=str(info.get("precision", "auto")),
        encoder=False,
    )
    return CachedModel(model, embeddings_dir, info)


def load_checked_embeddings(
    embeddings_dir: str | os.PathLike,
    case_id: str,
    *,
    model: PromptableModel,
    shape_zyx: tuple[int, ...],
) -> CaseEmbeddings:
    """A case's cached features; :class:`InputError` naming the file when its slice size
    differs from the image's (``shape_zyx``) or its encoder input size from ``model``'s."""
    path = case_embeddings_path(embeddings_dir, case_id)
    cached = load_case_embeddings(path)
    if tuple(cached.original_size) != tuple(shape_zyx[1:]):
        raise InputError(
            f"{path}: embedded slices are {cached.original_size} (H, W), the image's are "
            f"{tuple(shape_zyx[1:])}"
        )
    if model.image_size and cached.image_size != model.image_size:
        raise InputError(
            f"{path}: embedded at input size {cached.image_size}, the model takes "
            f"{model.image_size}"
        )
    return cached


def segment_sam_case(
    case: CaseInput,
    *,
    model: PromptableModel,
    config: SamConfig,
    embeddings_dir: str | os.PathLike,
    rng: np.random.Generator,
    prob_labels: Sequence[int] = (),
    clicks_rng: np.random.Generator | None = None,
    clicks_path: str | os.PathLike | None = None,
) -> CasePrediction:
    """Label volume ``(Z, Y, X)`` of one case from its cached embeddings and prompts.

    Prompts of one slice are decoded on it; box3d prompts (over several slices) are
    propagated from their middle slice (:mod:`medsegflow.promptable.propagate2d`). Slices
    without prompts stay background. With ``config.save_probabilities`` the prediction
    also holds the float16 ``(C, Z, Y, X)`` probabilities of the ``prob_labels`` (the
    dataset's foreground labels; :func:`paint_probabilities`: an object's mean over its
    repeats, the maximum over the objects of one label on a slice, 0 where none was
    decoded). Raises :class:`InputError` naming the embedding file when its slice size or
    encoder input size does not match.

    With ``config.clicks3d`` (n > 0) every row is a box3d object (one-slice ones too, as a
    one-slice propagation: its box decoded alone, the per-slice path's mask up to the
    rounding of batched decoding), corrected by n clicks
    (:func:`~medsegflow.promptable.propagate2d.corrective_clicks`, random ones drawn from
    ``clicks_rng``, default ``rng``) against the cleaned reference; the ``1 + n`` label
    volumes and the clicks go to ``clicks_path`` (:func:`write_click_volumes`,
    ``first_click=0``), and the last step is returned. :class:`ConfigError` when it is
    combined with ``clicks.rounds`` or with prompts that are not boxes alone.
    """
    shape_zyx = case.image.array_zyx.shape
    _check_clicks3d(case, config)
    if case.prompts.empty:
        if config.clicks3d:
            _write_clicks3d(clicks_path, shape_zyx, [[]] * (1 + config.clicks3d), None)
        return _case_prediction(shape_zyx, [], config=config, prob_labels=prob_labels)
    cached = load_checked_embeddings(embeddings_dir, case.case_id, model=model, shape_zyx=shape_zyx)
    volume = volume_rows(case.prompts)
    if len(volume) and config.click_rounds:
        raise ConfigError(
            f"{case.source}: box3d prompts are propagated without oracle clicks; "
            "set the method's clicks.rounds to 0"
        )
    if config.clicks3d:
        flat = case.prompts.drop(index=volume.index).sort_values("z", kind="stable")
        volume_objects = propagate_objects(
            model,
            cached,
            pd.concat([volume, flat]),  # the per-slice path's painting order
            multimask=config.multimask,
            n_z=shape_zyx[0],
            keep_logits=config.clicks3d_mask_input,
            box_rule=config.propagation_box,
            image_zyx=case.image.array_zyx,
        )
        steps, clicks = corrective_clicks(
            model,
            cached,
            volume_objects,
            case.read_label_zyx(),
            n_clicks=config.clicks3d,
            mode=config.clicks3d_mode,
            rng=rng if clicks_rng is None else clicks_rng,
            mask_input=config.clicks3d_mask_input,
            voting=config.voting,
            keep_probs=config.save_probabilities,
            batch_size=config.batch_size,
        )
        _write_clicks3d(clicks_path, shape_zyx, steps, clicks)
        return _case_prediction(shape_zyx, steps[-1], config=config, prob_labels=prob_labels)
    objects = propagated_objects(
        model,
        cached,
        volume,
        multimask=config.multimask,
        voting=config.voting,
        n_z=shape_zyx[0],
        keep_probs=config.save_probabilities,
        box_rule=config.propagation_box,
        image_zyx=case.image.array_zyx,
    )
    label_zyx = case.read_label_zyx() if config.click_rounds else None
    flat = case.prompts.drop(index=volume.index)
    for z, rows in flat.groupby("z", sort=True):
        objects += _slice_objects(
            model,
            cached.features(int(z)),
            rows,
            config=config,
            sizes=(cached.original_size, cached.input_size),
            label_yx=None if label_zyx is None else label_zyx[int(z)],
            rng=rng,
            source=case.source,
        )
    return _case_prediction(shape_zyx, objects, config=config, prob_labels=prob_labels)


def _check_clicks3d(case: CaseInput, config: SamConfig) -> None:
    if not config.clicks3d:
        return
    if config.click_rounds:
        raise ConfigError(
            f"{case.source}: clicks3d.n corrective 3D clicks replace the 2D oracle clicks; "
            "set the method's clicks.rounds to 0 (or clicks3d.n to 0)"
        )
    prompts = case.prompts
    boxed = np.isfinite(prompts[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)).all(axis=1)
    no_points = [not len(parse_points(v, source=case.source)) for v in prompts["points"]]
    if not (boxed & np.array(no_points, dtype=bool)).all():
        raise ConfigError(
            f"{case.source}: clicks3d.n needs a box3d prompt set (one box per object, no "
            f"points); case {case.case_id} has prompts with points or without a box"
        )


def _write_clicks3d(
    path: str | os.PathLike | None,
    shape_zyx: tuple[int, ...],
    steps: list[list[ObjectMask]],
    clicks: pd.DataFrame | None,
) -> None:
    if path is None:
        raise ValueError("segment_sam_case: clicks3d needs a clicks_path")
    labels_kzyx = np.stack([paint_objects(shape_zyx, objects) for objects in steps])
    if clicks is None:
        clicks = pd.DataFrame(columns=list(CLICK_TABLE_COLUMNS))
    write_click_volumes(path, labels_kzyx, clicks, first_click=0)


def _case_prediction(
    shape_zyx: tuple[int, ...],
    objects: list[ObjectMask],
    *,
    config: SamConfig,
    prob_labels: Sequence[int],
) -> CasePrediction:
    label_zyx = paint_objects(shape_zyx, objects)
    if not config.save_probabilities:
        return CasePrediction(label_zyx)
    probs_czyx = paint_probabilities(shape_zyx, objects, prob_labels)
    return CasePrediction(label_zyx, probs_czyx, tuple(int(v) for v in prob_labels))


def predict_sam_cases(
    job: PredictJob,
    *,
    model: PromptableModel,
    config: SamConfig,
    embeddings_dir: str | os.PathLike,
    prompts_path: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Predict every case of ``job`` with a loaded ``model``; write volumes and manifest.

    ``prompts_path`` defaults to the job's ``prompts``. Random clicks of a case draw from
    ``case_rng(job.seed, case_id, "clicks", job.method_name)``, random ``clicks3d`` ones
    from ``case_rng(job.seed, case_id, "clicks3d", job.method_name)``; with
    ``config.clicks3d`` each case's steps go to ``clicks/{case_id}.npz``
    (:func:`~medsegflow.interactive.click_volumes_path`; without, a stale one is removed). With
    ``config.save_probabilities`` each case's probabilities of every foreground label of
    the dataset's label map (in label-value order) go to ``{case_id}_probs.npz``. Returns
    the manifest (see :func:`~medsegflow.prediction.cases.predict_prompted_cases`).
    """
    prob_labels: list[int] = []
    if config.save_probabilities:
        prob_labels = sorted(v for v in read_label_map(job.preprocessed_dir).values() if v != 0)

    def segment_case(case: CaseInput) -> CasePrediction:
        clicks_path = click_volumes_path(job.out_dir, case.case_id)
        if not config.clicks3d:
            clicks_path.unlink(missing_ok=True)
        return segment_sam_case(
            case,
            model=model,
            config=config,
            embeddings_dir=embeddings_dir,
            rng=case_rng(job.seed, case.case_id, "clicks", job.method_name),
            prob_labels=prob_labels,
            clicks_rng=case_rng(job.seed, case.case_id, "clicks3d", job.method_name),
            clicks_path=clicks_path if config.clicks3d else None,
        )

    return predict_prompted_cases(job, segment_case=segment_case, prompts_path=prompts_path)


def predict_with_cached_sam(
    job: PredictJob,
    *,
    config: SamConfig,
    prompts_path: str | os.PathLike | None = None,
    own_propagation: bool = True,
) -> pd.DataFrame:
    """Build the job's model (:func:`load_cached_model`) and run :func:`predict_sam_cases`
    on ``job.device`` (default: CUDA when available); the model decodes in the precision
    of the cache's encoder. ``own_propagation`` False: box3d rows take the harness's
    slice-by-slice propagation even where the model offers its own (``key_slice_box`` is
    taken out of this model instance's native prompts)."""
    job.require("embeddings", "checkpoint", family=str(job.method["family"]))
    loaded = load_cached_model(job.inputs, device=job.device)
    if not own_propagation:
        loaded.model.native_prompts = loaded.model.native_prompts - {"key_slice_box"}
    log.info("%s: %s, %s", job.method_name, loaded.model.describe(), config)
    return predict_sam_cases(
        job,
        model=loaded.model,
        config=config,
        embeddings_dir=loaded.embeddings_dir,
        prompts_path=prompts_path,
    )


def predict_promptable_2d(job: PredictJob, *, own_propagation: bool = True) -> pd.DataFrame:
    """The generic 2D predictor (the ``sam`` family's): decode every prompt of every case.

    ``job.inputs``: ``preprocessed`` (manifest), ``prompts`` (prompts.tsv), ``embeddings``
    (the cache's manifest; ``model.json`` beside it gives the family and arch) and
    ``checkpoint`` (loaded by the family's :meth:`PromptableModel.build`). The method's
    settings are those of ``medsegflow/schemas/families/sam.schema.yaml``.
    ``own_propagation`` False: the harness propagates box3d rows even for a model with
    its own propagation (:func:`predict_with_cached_sam`).
    """
    job.require("prompts", family=str(job.method["family"]))
    return predict_with_cached_sam(
        job, config=parse_sam_config(job.method), own_propagation=own_propagation
    )
