"""The ``nninteractive`` family: nnInteractive on the official package's inference session
(:mod:`medsegflow.promptable.nninteractive_model`), run by the generic 3D protocol.

A method names a model folder in the released layout under ``weights:`` (the official
``nnInteractive_v1.0``, or any folder of that layout). Predictions read the canonical
image (original intensities: the package normalises itself) and the cleaned reference
(the simulated user's target), and write the labels after the last step and after every
step (:mod:`medsegflow.interactive`, scored into ``{method}_clicks.csv``).

The first interaction of each object (``first_interaction``):

- ``prompts`` (default): the generic protocol
  (:func:`medsegflow.promptable.volume_protocol.predict_volume_sessions`): the method's
  prompt set row (a 3D box where the folder declares 3D boxes, else the row's 2D box on
  its key slice ``z``; points on slice ``z``), or without ``prompts:`` a simulated first
  click on the object;
- ``scribble`` or ``lasso``: an **oracle** prompt the simulated user draws from the
  reference (:func:`oracle_scribble`, :func:`oracle_lasso`), then the same protocol.

Then ``clicks3d.n`` corrective clicks of the shared simulated user
(:func:`medsegflow.prompts.clicks.next_click_index`), as for every 3D method.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medsegflow import paths
from medsegflow.errors import ConfigError
from medsegflow.families.family import Family
from medsegflow.planning import base_inputs, dataset_method_pairs, method_config

if TYPE_CHECKING:
    import pandas as pd

    from medsegflow.prediction.job import PredictJob
    from medsegflow.promptable.interface import Interaction

NAME = "nninteractive"
WEIGHTS_SOURCE = (
    "official model folder nnInteractive_v1.0 from Hugging Face MIC-DKFZ/nnInteractive "
    "(the repository the nninteractive package downloads from; CC BY-NC-SA 4.0): name the "
    "folder itself (plans.json, dataset.json, fold_0/checkpoint_final.pth) under weights:"
)

log = logging.getLogger(__name__)


# --- the simulated user's scribbles and lassos (oracle prompts) --------------------------


def _largest_slice(region_zyx: np.ndarray, rule: str) -> int:
    """The axial slice of ``region_zyx`` with the most voxels (``largest``; ties: the
    lowest z) or the middle of its z extent (``middle``)."""
    areas = region_zyx.reshape(region_zyx.shape[0], -1).sum(axis=1)
    if rule == "largest":
        return int(np.argmax(areas))
    if rule == "middle":
        present = np.flatnonzero(areas)
        return int(present[len(present) // 2])
    raise ValueError(f"slice rule {rule!r} is not largest or middle")


def _slice_component(region_zyx: np.ndarray, rule: str) -> tuple[int, np.ndarray]:
    """``(z, the largest 8-connected component of the region on slice z)``."""
    from medsegflow.components import largest_component

    z = _largest_slice(region_zyx, rule)
    return z, largest_component(region_zyx[z])


def oracle_scribble(
    reference_zyx: np.ndarray,
    prediction_zyx: np.ndarray | None = None,
    *,
    slice_rule: str = "largest",
    thickness: int = 2,
) -> Interaction:
    """A scribble the simulated user draws: through the largest component of the error
    ``prediction != reference`` (the whole object before any prediction, full
    connectivity as the click rule), on that component's largest (or middle) axial
    slice, along the skeleton of the component's largest 2D part there
    (``skimage.morphology.skeletonize``), thickened in-plane to ``thickness`` pixels and
    kept inside the part. Its sign is the click rule's: positive when the part's deepest
    pixel (:func:`medsegflow.prompts.clicks.deepest_index`) is reference foreground, and
    the part is then cut to the pixels of that sign (a missed region and a false positive
    can touch). An oracle: it reads the reference."""
    from scipy import ndimage
    from skimage.morphology import skeletonize

    from medsegflow.components import largest_component
    from medsegflow.promptable.interface import Interaction
    from medsegflow.prompts.clicks import deepest_index, largest_error_region

    reference = np.asarray(reference_zyx, dtype=bool)
    prediction = np.zeros_like(reference) if prediction_zyx is None else prediction_zyx
    region = largest_error_region(prediction, reference)
    if region is None:
        raise ValueError("oracle_scribble: the prediction equals the reference")
    z, part = _slice_component(region, slice_rule)
    positive = bool(reference[z][deepest_index(part)])
    part = largest_component(part & (reference[z] == positive))
    line = skeletonize(part)
    if not line.any():  # a part too thin to skeletonize is its own scribble
        line = part
    if thickness > 1:
        line = ndimage.binary_dilation(line, np.ones((thickness, thickness), bool)) & part
    mask = np.zeros_like(reference)
    mask[z] = line
    return Interaction(kind="scribble", positive=positive, mask_zyx=mask, z=z)


def oracle_lasso(
    reference_zyx: np.ndarray, *, slice_rule: str = "largest", shape: str = "convex_hull"
) -> Interaction:
    """A lasso the simulated user draws around the object: on its largest (or middle)
    axial slice, the largest 2D component of the reference, filled (``contour``: its
    outline, holes filled) or its convex hull (``convex_hull``, a loose hand-drawn loop).
    An oracle: it reads the reference."""
    from scipy import ndimage
    from skimage.morphology import convex_hull_image

    from medsegflow.promptable.interface import Interaction

    reference = np.asarray(reference_zyx, dtype=bool)
    if not reference.any():
        raise ValueError("oracle_lasso: the reference is empty")
    z, part = _slice_component(reference, slice_rule)
    if shape == "convex_hull":
        filled = convex_hull_image(part)
    elif shape == "contour":
        filled = ndimage.binary_fill_holes(part)
    else:
        raise ValueError(f"lasso shape {shape!r} is not contour or convex_hull")
    mask = np.zeros_like(reference)
    mask[z] = filled
    return Interaction(kind="lasso", positive=True, mask_zyx=mask, z=z)


def oracle_first(
    spec: Mapping[str, Any], reference_zyx: np.ndarray, thickness: int = 2
) -> Interaction:
    """The first interaction ``first_interaction`` asks for (``scribble`` or ``lasso``)."""
    kind = spec["first_interaction"]
    if kind == "scribble":
        return oracle_scribble(
            reference_zyx, slice_rule=spec["scribble"]["slice"], thickness=thickness
        )
    if kind == "lasso":
        return oracle_lasso(
            reference_zyx, slice_rule=spec["lasso"]["slice"], shape=spec["lasso"]["shape"]
        )
    raise ValueError(f"first_interaction {kind!r} is not an oracle prompt")


# --- the predictor ---------------------------------------------------------------------


def predict_nninteractive(job: PredictJob) -> pd.DataFrame:
    """The family predictor; ``job.inputs``: ``preprocessed``, ``data`` (the canonical
    ``cases.tsv``), ``model`` (the model folder) and, with ``prompts:``, ``prompts``."""
    from medsegflow.promptable import volume_protocol as vp
    from medsegflow.promptable.nninteractive_model import NnInteractiveModel

    job.require("data", "model", family=NAME)
    spec = job.method
    model = NnInteractiveModel.build(spec, job.inputs["model"], device=job.device)
    log.info("%s: %s", job.method_name, model.describe())
    clicks = spec["clicks3d"]
    options = vp.ClickOptions(n_clicks=int(clicks["n"]), mode=clicks["mode"], first=clicks["first"])
    first_interaction = None
    if spec["first_interaction"] != "prompts":
        log.warning(
            "%s: each object's first interaction is an oracle %s drawn from the reference",
            job.method_name,
            spec["first_interaction"],
        )
        thickness = int(max(model.session.preferred_scribble_thickness[1:]))

        def oracle(obj: Any) -> list[Interaction]:
            return [oracle_first(spec, obj.reference_zyx, thickness)]

        first_interaction = oracle

    return vp.predict_volume_sessions(
        job,
        model,
        options=options,
        desc=f"{job.method_name} (nnInteractive)",
        check_image=check_image,
        first_interaction=first_interaction,
    )


def check_image(image: Any, path: Path) -> None:
    """:class:`InputError` naming the image when it is all zeros: the package normalises
    over the nonzero region and stops on such an image."""
    from medsegflow.errors import InputError

    if not np.any(image.array_zyx):
        raise InputError(
            f"{path}: the image is all zeros; nnInteractive normalises over its nonzero region"
        )


# --- planning ---------------------------------------------------------------------------


def nninteractive_methods(config: Mapping[str, Any]) -> list[str]:
    """Methods of the family, in config order."""
    return [name for name, spec in config["methods"].items() if spec["family"] == NAME]


def model_folder(config: Mapping[str, Any], method: str) -> str:
    """The model folder a method loads: its ``weights:`` entry."""
    return str(config["weights"][method_config(config, method)["weights"]])


def checkpoint_file(config: Mapping[str, Any], method: str) -> str:
    """The checkpoint the package will load from the method's folder: ``fold_<fold>/
    <checkpoint_name>``, with ``fold: null`` the only ``fold_*`` folder (``fold_0`` when
    there is not exactly one: :func:`missing_nninteractive_weights` names that)."""
    spec = method_config(config, method)
    folder = Path(model_folder(config, method)).expanduser()
    fold = spec.get("fold")
    if fold is None:
        found = sorted(p.name for p in folder.glob("fold_*") if p.is_dir())
        name = found[0] if len(found) == 1 else "fold_0"
    else:
        name = f"fold_{fold}"
    return str(folder / name / (spec.get("checkpoint_name") or "checkpoint_final.pth"))


def _inputs(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, str]:
    """The shared inputs, the canonical cases, the model folder and, when it is there, its
    checkpoint (which the cost table counts). A missing folder or checkpoint stops a real
    run before any job (:func:`missing_nninteractive_weights`); a dry-run plans without."""
    inputs = {
        **base_inputs(config, dataset, method),
        "data": paths.fill(paths.DATA_CASES, dataset=dataset),
        "model": model_folder(config, method),
    }
    checkpoint = checkpoint_file(config, method)
    if Path(checkpoint).is_file():
        inputs["checkpoint"] = checkpoint
    return inputs


def check_nninteractive(config: Mapping[str, Any]) -> None:
    """:class:`ConfigError` naming the key: a known weights key; an oracle first
    interaction without a prompt set."""
    for method in nninteractive_methods(config):
        spec = config["methods"][method]
        key = f"methods.{method}"
        if spec["weights"] not in config.get("weights", {}):
            known = ", ".join(sorted(config.get("weights", {}))) or "none"
            raise ConfigError(
                f"{key}.weights: '{spec['weights']}' is not a key under weights:; known: {known}"
            )
        if spec.get("first_interaction", "prompts") != "prompts" and spec.get("prompts"):
            raise ConfigError(
                f"{key}.prompts: first_interaction {spec['first_interaction']} draws its own "
                "first interaction; remove prompts: or set first_interaction: prompts"
            )


def missing_nninteractive_weights(config: Mapping[str, Any]) -> list[str]:
    """One line per model folder a scored method needs that is not there or is incomplete
    (no plans.json, dataset.json, capability file, fold folder or checkpoint)."""
    from medsegflow.errors import InputError
    from medsegflow.promptable.nninteractive_model import check_model_folder

    used = {m for _, m in dataset_method_pairs(config)}
    lines = []
    for method in nninteractive_methods(config):
        if method not in used:
            continue
        spec = method_config(config, method)
        key = spec["weights"]
        path = Path(str(config["weights"][key])).expanduser()
        try:
            check_model_folder(
                path,
                fold=spec.get("fold"),
                checkpoint_name=spec.get("checkpoint_name") or "checkpoint_final.pth",
            )
        except InputError as err:
            lines.append(f"weights.{key}: {err} (needed by methods.{method}); {WEIGHTS_SOURCE}")
    return lines


def _promptable() -> type:
    from medsegflow.promptable.nninteractive_model import NnInteractiveModel

    return NnInteractiveModel


FAMILY = Family(
    name=NAME,
    predict=predict_nninteractive,
    inputs=_inputs,
    env="nninteractive",
    gpu=True,
    cache="none",
    schema="families/nninteractive.schema.yaml",
    check=check_nninteractive,
    missing_weights=missing_nninteractive_weights,
    interactive=lambda config, method: True,
    promptable=_promptable,
)
