"""The :class:`Family` declaration: what the workflow needs to know of one method family."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from medsegflow.schema import schema_uri

if TYPE_CHECKING:
    import pandas as pd

    from medsegflow.prediction.job import PredictJob
    from medsegflow.promptable.interface import PromptableModel

Config = Mapping[str, Any]
Predictor = Callable[["PredictJob"], "pd.DataFrame"]
"""``predict(job) -> manifest``: writes every case of the job, then its manifest, with the
shared loop (:func:`medsegflow.prediction.cases.predict_cases`)."""
InputsFn = Callable[[Config, str, str], dict[str, str]]
"""``inputs(config, dataset, method) -> {name: path}``: the prediction job's input files."""
TrainFn = Callable[[Config, str, str], "str | None"]
"""``train(config, dataset, method) -> path | None``: the file target of the training job
whose output the method's predictions load (None when that method is not trained here)."""
StagesFn = Callable[[Config, str, str], "list[str] | str"]
"""``stage_manifests(config, dataset, method)``: the manifests (``case_id, seconds``) of
the family's own stage jobs that the method's predictions read, or a string saying why
their time cannot be counted."""
Cache = Literal["sam_embeddings", "none", "own"]
CACHES: tuple[str, ...] = ("sam_embeddings", "none", "own")


@dataclass(frozen=True)
class Family:
    """One method family.

    Attributes:
        name: the ``family:`` value of its methods.
        predict: its predictor (:data:`Predictor`); imports its implementation lazily, so
            the registry costs nothing to import.
        inputs: the named inputs of its prediction job (:data:`InputsFn`), including the
            shared ``preprocessed`` and ``prompts`` (:func:`medsegflow.planning.base_inputs`).
        env: the conda env of its prediction jobs, ``envs/<env>.yaml``.
        gpu: whether its prediction jobs ask a cluster for a GPU.
        cache: the cache its predictions read: ``"sam_embeddings"`` (the method's
            ``model`` names a ``sam_models`` entry whose image embeddings are computed
            once per dataset), ``"none"``, or ``"own"`` (a cache the family's own jobs make).
        schema: its config schema file: a path relative to ``medsegflow/schemas/`` for the built-in
            families, an absolute path for the others.
        train: its optional training step (:data:`TrainFn`).
        wildcards: its own wildcards and their values (``config -> {wildcard: [values]}``),
            for the rules of its extra stages.
        check: cross-reference checks of its methods at parse time (:class:`ConfigError`).
        missing_weights: one line per weight file its methods need and that is missing.
        interactive: whether a method runs the interactive protocol (``(config, method) ->
            bool``): its predictions then hold the labels after every click
            (:mod:`medsegflow.interactive`), scored into ``{method}_clicks.csv``.
        promptable: for a promptable family, its model class (``() -> type``, imported
            only when called) implementing
            :class:`~medsegflow.promptable.interface.PromptableModel`; the shared stages
            (embedding cache, decoding, propagation, clicks, robustness, cost) use it.
        stage_manifests: the manifests of its own stages' jobs per method
            (:data:`StagesFn`), whose mean seconds per case the cost table adds to the
            method's (``text_s_per_case``; MedCLIP-SAMv2's saliency and coarse masks).
    """

    name: str
    predict: Predictor
    inputs: InputsFn
    env: str
    gpu: bool
    cache: Cache
    schema: str | Path
    train: TrainFn | None = None
    wildcards: Callable[[Config], dict[str, list[str]]] | None = None
    check: Callable[[Config], None] | None = None
    missing_weights: Callable[[Config], list[str]] | None = None
    interactive: Callable[[Config, str], bool] | None = None
    promptable: Callable[[], type[PromptableModel]] | None = None
    stage_manifests: StagesFn | None = None

    def __post_init__(self) -> None:
        if self.cache not in CACHES:
            raise ValueError(f"family {self.name}: cache {self.cache!r} is not one of {CACHES}")

    @property
    def schema_uri(self) -> str:
        return schema_uri(self.schema)
