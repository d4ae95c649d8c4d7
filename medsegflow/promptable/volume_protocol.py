"""The generic interactive protocol of 3D promptable models (``dims == 3``).

Nothing here is model-specific: a model is a
:class:`~medsegflow.promptable.interface.PromptableModel` whose
:meth:`~medsegflow.promptable.interface.PromptableModel.start_session` gives a
:class:`~medsegflow.promptable.interface.VolumeSession`. For every case of the job
(:func:`predict_volume_sessions`):

1. the canonical image (original intensities, original geometry: the job's ``data``
   input) goes to ``model.start_session`` once; the cleaned reference (the preprocessed
   labels) is the simulated user's target;
2. the **objects**: without a prompt set, every label value present in the reference,
   ascending (the object is ``reference == value``); with one (the job's ``prompts``
   input), every prompt row of repeat 0 in ``prompt_id`` order, its object the row's
   label (``component`` -1) or that label's ``component``-th 26-connected component,
   largest first (as box3d prompt sets number them);
3. per object :func:`run_object`: ``session.reset()``; the **first interaction**, from
   the prompt row (:func:`row_interactions`: a box gives ``box3d`` where the model takes
   it natively, otherwise ``key_slice_box`` on the row's slice; points give one
   ``points3d`` each on the row's slice), or the family's own first interaction
   (``first_interaction``, e.g. an oracle scribble), or, without either, a **simulated
   first click** on the object (:func:`medsegflow.prompts.clicks.first_click`, ``first``
   mode);
   then ``n_clicks`` **corrective clicks** of the shared simulated user
   (:func:`medsegflow.prompts.clicks.next_click_index`: the largest error component,
   ``mode`` ``center`` or ``random``), each through ``session.interact``. Once the mask
   equals the reference no click is added and the mask is repeated, so there is one mask
   per step. After the last step ``session.finish(box)`` may replace the last mask (the
   object's 3D box: the prompt's, or the reference's tight box);
4. the masks are painted in object order (a later object overwrites) into one label
   volume per step, written with :func:`medsegflow.interactive.write_click_volumes`
   (``clicks/{case_id}.npz``, with the clicks in original voxel indices) and the last
   step through the shared loop :func:`medsegflow.prediction.cases.predict_cases`.

Steps: with a prompt set (or ``first_interaction``) the prompt is step 0
(``first_click=0``) and the clicks are 1..n; with a simulated first click it is click 1
(``first_click=1``) and the corrective clicks 2..n+1. Random draws (a random first click,
random corrective clicks) come from one generator per case, ``case_rng(seed, case_id,
"clicks3d", method)``, object after object, click after click.

**The user's frame.** The user sees the reference and the session's mask on the original
grid, unless the session offers its own frame
(:meth:`~medsegflow.promptable.interface.VolumeSession.user_frame`): SAM-Med3D's official
protocol samples its clicks from the reference resampled to its 1.5 mm frame and cut to
its crop, so its session returns that frame and takes the clicks there
(:attr:`~medsegflow.promptable.interface.Interaction.frame_index`); the clicks are recorded
in original voxel indices (rounded). An object whose reference is empty in the user's
frame is skipped with a warning (e.g. a label smaller than one 1.5 mm voxel).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medsegflow.components import label_by_size
from medsegflow.datasets.canonical import image_path, label_path
from medsegflow.errors import ConfigError, InputError
from medsegflow.interactive import CLICK_TABLE_COLUMNS, click_volumes_path, write_click_volumes
from medsegflow.io import read_volume
from medsegflow.manifests import BOX_COLUMNS, parse_points, read_prompts
from medsegflow.prediction.cases import _check_slices, predict_cases, read_label_volume
from medsegflow.promptable.interface import Interaction, UserFrame, VolumeSession
from medsegflow.prompts import clicks as click_rules
from medsegflow.prompts.propagation import box_3d_from_mask
from medsegflow.seeding import case_rng

if TYPE_CHECKING:
    from medsegflow.io import Volume
    from medsegflow.prediction.job import PredictJob
    from medsegflow.promptable.interface import PromptableModel

log = logging.getLogger(__name__)

RNG_STREAM = "clicks3d"


@dataclass(frozen=True)
class ClickOptions:
    """The simulated user.

    Attributes:
        n_clicks: corrective clicks after the first interaction (0: none).
        mode: ``center`` or ``random`` (:mod:`medsegflow.prompts.clicks`), each next click.
        first: ``center`` or ``random``, the simulated first click when there is no
            prompt set.
    """

    n_clicks: int
    mode: str = "center"
    first: str = "center"

    def __post_init__(self) -> None:
        if self.n_clicks < 0:
            raise ValueError(f"n_clicks must be >= 0, got {self.n_clicks}")
        for rule in (self.mode, self.first):
            if rule not in click_rules.CLICK_MODES:
                raise ValueError(f"click mode {rule!r} is not one of {click_rules.CLICK_MODES}")


@dataclass
class VolumeObject:
    """One object of a case: the label value it is painted with, its reference on the
    original grid, and its first interactions (empty: a simulated first click)."""

    label: int
    reference_zyx: np.ndarray
    first: list[Interaction] = field(default_factory=list)
    box: Interaction | None = None


@dataclass
class ObjectRun:
    """:func:`run_object`'s result: bool ``(Z, Y, X)`` masks, one per step, and the
    simulated clicks as ``(step, interaction)``; ``skipped`` when the object was not
    visible in the user's frame (no mask, no click)."""

    masks: list[np.ndarray]
    clicks: list[tuple[int, Interaction]]
    skipped: bool = False


def _frame(
    session: VolumeSession, reference: np.ndarray | None, mask: np.ndarray | None
) -> UserFrame:
    frame = session.user_frame(reference)
    if frame is not None:
        return frame
    if reference is None:
        raise ValueError(f"{type(session).__name__}: no user frame and no reference")
    return UserFrame(reference=reference, prediction=mask, to_original=_identity)


def _identity(index: np.ndarray) -> np.ndarray:
    return np.asarray(index, dtype=np.float64).reshape(-1, 3)


def _click(frame: UserFrame, click: np.ndarray) -> Interaction:
    """The interaction of a click ``[*frame_index, label]`` placed in ``frame``."""
    index = tuple(int(v) for v in click[:-1])
    zyx = np.rint(frame.to_original(np.asarray([index], dtype=np.float64))[0]).astype(np.int64)
    return Interaction(
        kind="points3d",
        positive=bool(click[-1]),
        point_zyx=tuple(int(v) for v in zyx),
        frame_index=index,
    )


def reference_box(reference_zyx: np.ndarray) -> Interaction:
    """The tight 3D box of a reference object (inclusive voxel indices) as a ``box3d``."""
    (x0, y0, x1, y1), (z0, z1) = box_3d_from_mask(reference_zyx)
    return Interaction(kind="box3d", box_zyxzyx=tuple(int(v) for v in (z0, y0, x0, z1, y1, x1)))


def run_clicks(
    session: VolumeSession,
    reference_zyx: np.ndarray | None,
    first: Sequence[Interaction] = (),
    *,
    options: ClickOptions,
    rng: np.random.Generator | None,
) -> ObjectRun:
    """One object's interactions (module docstring, step 3, without ``finish``):
    ``session.reset()``, the ``first`` interactions (empty: a simulated first click), then
    the corrective clicks; ``1 + n_clicks`` masks. ``reference_zyx`` None: only for a
    session whose :meth:`~VolumeSession.user_frame` knows the object itself (SAM-Med3D's
    :func:`~medsegflow.sam3d.infer.segment_object`, given the object in its model frame)."""
    reference = None if reference_zyx is None else np.asarray(reference_zyx, dtype=bool)
    session.reset()
    clicks: list[tuple[int, Interaction]] = []
    if first:
        for interaction in first:
            mask = session.interact(interaction)
    else:
        frame = _frame(session, reference, None)
        if not frame.reference.any():
            return ObjectRun([], [], skipped=True)
        click = click_rules.first_click(frame.reference, mode=options.first, rng=rng)
        interaction = _click(frame, click)
        mask = session.interact(interaction)
        clicks.append((1, interaction))
    masks = [np.asarray(mask, dtype=bool)]
    offset = 1 if first else 2
    for step in range(options.n_clicks):
        frame = _frame(session, reference, masks[-1])
        if frame.prediction is None:
            raise ValueError(f"{type(session).__name__}.user_frame: no mask after an interaction")
        click = click_rules.next_click_index(
            frame.prediction, frame.reference, mode=options.mode, rng=rng
        )
        if click is None:
            masks.append(masks[-1].copy())
            continue
        interaction = _click(frame, click)
        masks.append(np.asarray(session.interact(interaction), dtype=bool))
        clicks.append((step + offset, interaction))
    return ObjectRun(masks, clicks)


def run_object(
    session: VolumeSession,
    obj: VolumeObject,
    *,
    options: ClickOptions,
    rng: np.random.Generator | None,
) -> ObjectRun:
    """:func:`run_clicks` for ``obj``, then ``session.finish`` with the object's 3D box
    (its prompt's, or the reference's tight box), which may replace the last mask."""
    run = run_clicks(session, obj.reference_zyx, obj.first, options=options, rng=rng)
    if run.skipped:
        return run
    box = obj.box if obj.box is not None else reference_box(obj.reference_zyx)
    final = session.finish(box)
    if final is not None:
        run.masks[-1] = np.asarray(final, dtype=bool)
    return run


def row_interactions(
    row: dict[str, Any], native: frozenset[str], *, source: str
) -> list[Interaction]:
    """The first interactions of one prompt row: its box (``box3d`` over ``z_min..z_max``
    where ``native`` has it, else ``key_slice_box`` on slice ``z``), then one ``points3d``
    per point on slice ``z``. Box corners are rounded outwards to voxel indices for
    ``box3d``. :class:`ConfigError` when the model takes neither kind of the row."""
    out: list[Interaction] = []
    box = np.array([row[c] for c in BOX_COLUMNS], dtype=np.float64)
    z = int(row["z"])
    if np.isfinite(box).all():
        if "box3d" in native:
            lo = np.floor(box[:2]).astype(int)
            hi = np.ceil(box[2:]).astype(int)
            out.append(
                Interaction(
                    kind="box3d",
                    box_zyxzyx=(int(row["z_min"]), lo[1], lo[0], int(row["z_max"]), hi[1], hi[0]),
                )
            )
        elif "key_slice_box" in native:
            out.append(Interaction(kind="key_slice_box", box_xyxy=tuple(box.tolist()), z=z))
        else:
            raise ConfigError(f"{source}: a box prompt, but the model takes {sorted(native)}")
    points = parse_points(str(row["points"]), source=source)
    if len(points) and "points3d" not in native:
        raise ConfigError(f"{source}: point prompts, but the model takes {sorted(native)}")
    for x, y, label in points:
        out.append(
            Interaction(kind="points3d", positive=bool(label), point_zyx=(z, int(y), int(x)))
        )
    return out


def case_objects(
    reference_zyx: np.ndarray,
    rows: pd.DataFrame | None,
    native: frozenset[str],
    *,
    source: str,
) -> list[VolumeObject]:
    """The objects of one case (module docstring, step 2): ``rows`` is the case's prompt
    rows, None without a prompt set."""
    if rows is None:
        values = sorted(int(v) for v in np.unique(reference_zyx) if v != 0)
        return [VolumeObject(value, reference_zyx == value) for value in values]
    objects, components = [], {}
    for row in rows[rows["repeat"] == 0].sort_values("prompt_id", kind="stable").to_dict("records"):
        value, component = int(row["label"]), int(row["component"])
        mask = reference_zyx == value
        if component >= 0:
            if value not in components:
                components[value] = label_by_size(mask)
            labelled, order = components[value]
            mask = labelled == order[component] if component < len(order) else np.zeros_like(mask)
        first = row_interactions(row, native, source=source)
        box = next((i for i in first if i.kind == "box3d"), None)
        objects.append(VolumeObject(value, mask, first, box))
    return objects


def segment_volume(
    session: VolumeSession,
    reference_zyx: np.ndarray,
    objects: Sequence[VolumeObject],
    *,
    options: ClickOptions,
    rng: np.random.Generator | None,
    case_id: str = "",
) -> tuple[np.ndarray, pd.DataFrame, list[ObjectRun]]:
    """``(labels after each step (1 + n_clicks, Z, Y, X) uint8/int, clicks table, runs)``
    of one case's objects, painted in order (a later object overwrites)."""
    shape = np.shape(reference_zyx)
    top = max([o.label for o in objects], default=0)
    dtype = np.uint8 if top < 256 else np.int32
    painted = np.zeros((1 + options.n_clicks, *shape), dtype=dtype)
    rows, runs = [], []
    for obj in objects:
        run = run_object(session, obj, options=options, rng=rng)
        runs.append(run)
        if run.skipped:
            log.warning("%s: label %d is empty in the user's frame: skipped", case_id, obj.label)
            continue
        for step, mask in enumerate(run.masks):
            painted[step][mask] = obj.label
        for number, interaction in run.clicks:
            z, y, x = interaction.point_zyx
            rows.append(
                {"label": obj.label, "click": number, "z": z, "y": y, "x": x,
                 "positive": int(interaction.positive)}
            )  # fmt: skip
    return painted, pd.DataFrame(rows, columns=list(CLICK_TABLE_COLUMNS)), runs


def predict_volume_sessions(
    job: PredictJob,
    model: PromptableModel,
    *,
    options: ClickOptions,
    desc: str | None = None,
    check_image: Callable[[Volume, Path], None] | None = None,
    first_interaction: Callable[[VolumeObject], Sequence[Interaction]] | None = None,
) -> pd.DataFrame:
    """Every case of ``job`` by the protocol (module docstring) with ``model`` (dims 3).

    ``job.inputs``: ``preprocessed``, ``data`` (the canonical ``cases.tsv``) and, for
    prompted first interactions, ``prompts``. ``check_image(image, path)``: the model's
    own checks of an image (raising :class:`InputError`), after the shared ones (a 3D
    image, the reference of its shape). ``first_interaction(obj)``: without a prompt
    set, each object's first interactions of the method's own instead of a simulated
    first click (e.g. an oracle scribble or lasso drawn from ``obj.reference_zyx``);
    like a prompt they are step 0 (``first_click=0``) and count as one prompt per
    object, and a ``box3d`` among them is the object's box for ``finish``. Returns the
    manifest with, per case, the numbers of ``session.cost()`` (0 where a case has none).
    """
    if model.dims != 3:
        raise ValueError(f"{model.kind}: the volume protocol needs a 3D model (dims 3)")
    job.require("data", family=model.kind)
    native = frozenset(model.native_prompts)
    prompts_path = job.inputs.get("prompts")
    by_case: dict[str, pd.DataFrame] | None = None
    if prompts_path:
        prompts = read_prompts(prompts_path)
        by_case = {c: rows for c, rows in prompts.groupby("case_id", sort=False)}
        if (prompts["repeat"] > 0).any():
            log.info("%s: the 3D protocol uses each object's repeat 0 only", job.method_name)
    elif first_interaction is None and "points3d" not in native:
        raise ConfigError(
            f"{job.key('prompts')}: {model.kind} takes {sorted(native)}, not the simulated "
            "first click; name a prompt set"
        )
    data_dir = Path(job.inputs["data"]).parent
    costs: dict[str, dict[str, float]] = {}

    def segment(case: dict[str, Any], _preprocessed: Volume) -> tuple[np.ndarray, int]:
        case_id = case["case_id"]
        path = image_path(data_dir, case_id)
        image = read_volume(path)
        reference = read_label_volume(
            label_path(job.preprocessed_dir, case_id), image.array_zyx.shape
        )
        if image.array_zyx.ndim != 3 or min(image.array_zyx.shape) < 2:
            raise InputError(
                f"{path}: {model.kind} needs a 3D image, got shape {image.array_zyx.shape}"
            )
        if check_image is not None:
            check_image(image, path)
        rows = None
        if by_case is not None:
            rows = by_case.get(case_id, pd.DataFrame(columns=["z", "repeat", "prompt_id"]))
            _check_slices(rows, image.array_zyx.shape[0], source=str(prompts_path), case_id=case_id)
        objects = case_objects(reference, rows, native, source=str(prompts_path or ""))
        if rows is None and first_interaction is not None:
            for obj in objects:
                obj.first = list(first_interaction(obj))
                obj.box = next((i for i in obj.first if i.kind == "box3d"), None)
        prompted = rows is not None or first_interaction is not None
        start = time.perf_counter()
        session = model.start_session(
            image.array_zyx, spacing_zyx=image.geometry.spacing_zyx, geometry=image.geometry
        )
        try:
            volumes, clicks, _ = segment_volume(
                session,
                reference,
                objects,
                options=options,
                rng=case_rng(job.seed, case_id, RNG_STREAM, job.method_name),
                case_id=case_id,
            )
            costs[case_id] = dict(session.cost())
        finally:
            session.close()
        write_click_volumes(
            click_volumes_path(job.out_dir, case_id),
            volumes,
            clicks,
            first_click=0 if prompted else 1,
        )
        log.info(
            "%s: %d objects x %d steps in %.1f s (%s)",
            case_id,
            len(objects),
            len(volumes),
            time.perf_counter() - start,
            ", ".join(f"{k} {v:g}" for k, v in costs[case_id].items()) or "no session costs",
        )
        if rows is not None:
            return volumes[-1], len(clicks) + len(rows[rows["repeat"] == 0])
        return volumes[-1], len(clicks) + (len(objects) if prompted else 0)

    manifest = predict_cases(job, segment=segment, desc=desc or f"{job.method_name} (3D clicks)")
    names = list(dict.fromkeys(k for c in costs.values() for k in c))
    ids = manifest["case_id"].astype(str)
    return manifest.assign(**{k: [costs.get(c, {}).get(k, 0) for c in ids] for k in names})
