"""Every ``results/`` path template of the workflow, in one place.

Each constant is a Snakemake pattern (``{dataset}``, ``{method}``, ... wildcards): rules
use it as their output, and the workflow logic fills it with :func:`fill` to name the
inputs of other jobs. A stage's per-case files live inside the folder of its file target
(the folder of a ``manifest.tsv``); their names are the stage's own business.
"""

from __future__ import annotations

import re

DATA_CASES = "results/data/{dataset}/cases.tsv"
PREPROCESSED = "results/preprocessed/{dataset}/manifest.tsv"
GT_PROMPTS = "results/prompts/{dataset}/{prompt}/prompts.tsv"
EMBEDDINGS = "results/embeddings/{dataset}/{model}/manifest.tsv"

SAM_MODEL_WEIGHTS = "results/models/{model}/sam.pth"
"""Weights of a SAM-family model trained by the pipeline (the training stage's target)."""
SAM_MODEL_CARD = "results/models/{model}/model.json"
"""Its sidecar: base, recipe and architecture (:mod:`medsegflow.models.model_card`)."""
SAM_MODEL_HISTORY = "results/models/{model}/train_log.csv"

SAM3D_WEIGHTS = "results/models/sam3d/{sam3d}/sam3d.pth"
"""A SAM-Med3D trained by the pipeline (family ``sam3d``, ``model_state_dict`` layout)."""
SAM3D_CARD = "results/models/sam3d/{sam3d}/model.json"
SAM3D_HISTORY = "results/models/sam3d/{sam3d}/train_log.csv"

CLIP_CAPTIONS = "results/clip_data/{clip}/captions.csv"
CLIP_MODEL = "results/models/{clip}/open_clip_config.json"
"""The file target of a CLIP model folder trained or fine-tuned by the pipeline."""
SALIENCY = "results/saliency/{dataset}/{sal}/manifest.tsv"
COARSE = "results/coarse/{dataset}/{crs}/manifest.tsv"
MASK_PROMPTS = "results/prompts/{dataset}/{tpk}/prompts.tsv"
TUNING = "results/tuning/{dataset}/{method}/chosen.json"

NNUNET_CONVERTED = "results/nnunet/converted/{dataset}/{labels}.json"
NNUNET_PLANNED = "results/nnunet/planned/{dataset}/{labels}.json"
NNUNET_TRAINED = "results/models/nnunet/{dataset}/{method}/training.json"
PSEUDOLABELS = "results/pseudolabels/{dataset}/{method}/manifest.tsv"

PREDICTIONS = "results/predictions/{dataset}/{method}/manifest.tsv"
PREDICTION_SHARD = "results/predictions/{dataset}/{method}/shards/{scatteritem}.tsv"
METRICS = "results/metrics/{dataset}/{method}.csv"
CONVENTION_METRICS = "results/metrics/{dataset}/{method}_conventions.csv"
CLICK_METRICS = "results/metrics/{dataset}/{method}_clicks.csv"
"""DSC and NSD after each click of an interactive method (:mod:`medsegflow.interactive`)."""
ROBUSTNESS = "results/robustness/{dataset}/{model}.csv"
"""Per-case prompt-robustness curves of one SAM model (:mod:`medsegflow.robustness`)."""
TABLE = "results/tables/{table}.csv"
TABLES = (
    "all",
    "summary",
    "stats",
    "ranking",
    "conventions",
    "cost",
    "robustness",
    "clicks",
    "clicks_auc",
)
METRIC_FIGURE = "results/figures/{metric}_by_method.png"
QUALITATIVE_FIGURE = "results/figures/qualitative_{dataset}.png"
RANKING_FIGURE = "results/figures/ranking_{dataset}.png"
CONVENTIONS_FIGURE = "results/figures/conventions_rank.png"
COST_FIGURE = "results/figures/cost_pareto.png"
ROBUSTNESS_FIGURE = "results/figures/robustness_{dataset}.png"
CLICKS_FIGURE = "results/figures/clicks_{dataset}.png"


def fill(template: str, **wildcards: str) -> str:
    """``template`` with its wildcards replaced; ``KeyError`` names a missing one."""
    return template.format(**wildcards)


def keep_only(template: str, *names: str) -> str:
    """``template`` with every wildcard but ``names`` escaped (``{{dataset}}``), as
    Snakemake's ``expand`` and ``gather`` expect for the wildcards they leave alone."""

    def escape(match: re.Match) -> str:
        name = match.group(1)
        return match.group(0) if name in names else "{{" + name + "}}"

    return re.sub(r"\{(\w+)\}", escape, template)
