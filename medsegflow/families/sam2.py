"""The ``sam2`` family: SAM 2.1 and MedSAM2 on the official ``sam2`` package.

Its model (``sam_models.<m>: {family: sam2, config: ..., weights: ...}``) is
:class:`medsegflow.promptable.sam2_model.Sam2Promptable`; everything else is shared: the
embedding cache (its features: the image embedding and the two high-resolution maps), the
generic 2D predictor (:func:`medsegflow.promptable.predict2d.predict_promptable_2d`: boxes,
points, clicks, box3d propagation and corrective 3D clicks), the robustness curves and the
cost table. ``propagation`` picks the 3D protocol of box3d prompt sets: ``video``
(MedSAM2's, the model's own :meth:`~Sam2Promptable.propagate_from_key_slice`) or
``harness`` (the harness's slice-by-slice propagation with the image predictor).
docs/families/sam2.md describes both and what differs from the official scripts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsegflow.errors import ConfigError
from medsegflow.families.family import Family
from medsegflow.families.sam import is_interactive, sam_inputs
from medsegflow.planning import dataset_method_pairs

if TYPE_CHECKING:
    import pandas as pd

    from medsegflow.prediction.job import PredictJob
    from medsegflow.promptable.interface import PromptableModel

NAME = "sam2"
SAM2_SOURCE = (
    "official SAM 2.1 checkpoints sam2.1_hiera_tiny.pt, sam2.1_hiera_small.pt, "
    "sam2.1_hiera_base_plus.pt, sam2.1_hiera_large.pt: facebookresearch/sam2 release "
    "(https://dl.fbaipublicfiles.com/segment_anything_2/092824/<file>, the repository's "
    "checkpoints/download_ckpts.sh)"
)
MEDSAM2_SOURCE = (
    "official MedSAM2 checkpoint MedSAM2_latest.pt: bowang-lab/MedSAM2 on Hugging Face "
    "(wanglab/MedSAM2), with its config sam2.1_hiera_t512.yaml"
)


def _predict(job: PredictJob) -> pd.DataFrame:
    """``propagation: video`` lets the model propagate box3d rows itself (MedSAM2's video
    protocol); ``harness`` gives them the harness's slice-by-slice propagation."""
    from medsegflow.promptable.predict2d import predict_promptable_2d

    video = job.method.get("propagation", "video") == "video"
    return predict_promptable_2d(job, own_propagation=video)


def _promptable() -> type[PromptableModel]:
    from medsegflow.promptable.sam2_model import Sam2Promptable

    return Sam2Promptable


def sam2_methods(config: Mapping[str, Any]) -> list[str]:
    """Methods of the family, in config order."""
    return [name for name, spec in config["methods"].items() if spec.get("family") == NAME]


def official_source(path: str | Path) -> str:
    """Where the official file of a weights path comes from (by its file name)."""
    name = Path(str(path)).name.lower()
    if "medsam2" in name:
        return MEDSAM2_SOURCE
    return SAM2_SOURCE


def check_sam2(config: Mapping[str, Any]) -> None:
    """:class:`ConfigError` naming the key: a method's model must be a ``sam_models``
    entry of family sam2; corrective 3D clicks need a box3d prompt set, no 2D click
    rounds and, after the video protocol, ``clicks3d.mask_input: false``."""
    prompts = config.get("prompts") or {}
    models = config.get("sam_models") or {}
    for method in sam2_methods(config):
        spec = config["methods"][method]
        key = f"methods.{method}"
        model = spec.get("model")
        if model not in models:
            known = ", ".join(sorted(models)) or "none"
            raise ConfigError(f"{key}.model: '{model}' is not a key of sam_models; known: {known}")
        if models[model].get("family") != NAME:
            raise ConfigError(
                f"{key}.model: sam_models.{model} is of family "
                f"{models[model].get('family', 'sam')}, not {NAME}"
            )
        if is_interactive(config, method):
            kind = (prompts.get(spec.get("prompts")) or {}).get("type")
            if kind != "box3d":
                raise ConfigError(
                    f"{key}.clicks3d.n: corrective 3D clicks follow a box3d prompt set; "
                    f"prompts '{spec.get('prompts')}' is of type {kind}"
                )
            if (spec.get("clicks") or {}).get("rounds", 0):
                raise ConfigError(f"{key}.clicks3d.n: set {key}.clicks.rounds to 0 with 3D clicks")
            video = spec.get("propagation", "video") == "video"
            if video and (spec.get("clicks3d") or {}).get("mask_input", True):
                raise ConfigError(
                    f"{key}.clicks3d.mask_input: set it to false with propagation video (the "
                    "video predictor keeps no image-predictor logits to feed back)"
                )


def missing_sam2_weights(config: Mapping[str, Any]) -> list[str]:
    """One line per checkpoint of a sam2 model that a scored method needs and that is not
    there: the key, the path and the official source."""
    used = {m for _, m in dataset_method_pairs(config)}
    models = config.get("sam_models") or {}
    lines, seen = [], set()
    for method in sam2_methods(config):
        model = config["methods"][method].get("model")
        if method not in used or model in seen or model not in models:
            continue
        seen.add(model)
        key = models[model].get("weights")
        if not key:
            lines.append(f"sam_models.{model}.weights: a sam2 model needs a checkpoint key")
            continue
        path = Path(str((config.get("weights") or {}).get(key, ""))).expanduser()
        if not path.is_file():
            lines.append(
                f"weights.{key}: file not found at {path} (needed by sam_models.{model}); "
                f"{official_source(path)}"
            )
    return lines


FAMILY = Family(
    name=NAME,
    predict=_predict,
    inputs=sam_inputs,
    env="torch",
    gpu=True,
    cache="sam_embeddings",
    schema="families/sam2.schema.yaml",
    check=check_sam2,
    missing_weights=missing_sam2_weights,
    interactive=is_interactive,
    promptable=_promptable,
)
