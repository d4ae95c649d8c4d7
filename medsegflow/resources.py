"""Cluster resources and conda envs of each job, from its rule name and its method's family.

``rules/common.smk`` binds these to each job's rule name, wildcards and attempt
(``get_gpu_count``, ``get_mem_mb``, ``get_runtime``, ``get_method_env``), so a rule added
later gets sensible SLURM requests from its name alone: ``<verb>_<noun>`` with a GPU verb
asks for a GPU, and a ``predict_*`` job asks for one when its method's family says so
(:attr:`medsegflow.families.Family.gpu`); its conda env is the family's
(:attr:`~medsegflow.families.Family.env`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medsegflow.families.registry import FAMILIES, family_named, family_of

GPU_VERBS = frozenset({"embed", "train", "finetune", "compute", "tune"})
"""Rule-name verbs whose every job runs a torch model (image encoders, training)."""

LIGHT_VERBS = frozenset({"make", "collect", "summarise", "plot", "gather"})
"""Rule-name verbs of small table, prompt and figure jobs."""


@dataclass(frozen=True)
class JobResources:
    """Requests of a job's first attempt: memory (MB) and wall time (minutes)."""

    mem_mb: int
    runtime_min: int

    def for_attempt(self, attempt: int) -> JobResources:
        """Both requests times ``attempt`` (a job killed for memory or time gets more)."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        return JobResources(self.mem_mb * attempt, self.runtime_min * attempt)


LIGHT_JOB = JobResources(mem_mb=2000, runtime_min=30)
CPU_JOB = JobResources(mem_mb=4000, runtime_min=120)
GPU_JOB = JobResources(mem_mb=16000, runtime_min=360)
TRAIN_JOB = JobResources(mem_mb=32000, runtime_min=1440)


def _verb(rule: str) -> str:
    return rule.split("_", 1)[0]


def family_runtimes() -> dict[str, tuple[str, bool]]:
    """``{family: (conda env, needs a GPU)}`` of every registered family."""
    return {name: (family.env, family.gpu) for name, family in FAMILIES.items()}


def gpu_count(config: Mapping[str, Any], rule: str, method: str | None = None) -> int:
    """GPUs for one job of ``rule``: 1 for GPU verbs and GPU-family predictions, else 0.

    ``method`` is the job's ``{method}`` wildcard, if it has one. On a cluster without
    GPUs, override with ``--set-resources <rule>:gpu=0``.
    """
    if _verb(rule) in GPU_VERBS:
        return 1
    if _verb(rule) == "predict" and method is not None:
        return int(family_of(config, method).gpu)
    return 0


def job_resources(config: Mapping[str, Any], rule: str, method: str | None = None) -> JobResources:
    """First-attempt memory and wall time of a job of ``rule``; see :func:`gpu_count`.

    Training jobs get :data:`TRAIN_JOB`, other GPU jobs :data:`GPU_JOB`, table, prompt and
    figure jobs :data:`LIGHT_JOB`, the rest :data:`CPU_JOB`; scale with ``for_attempt``.
    """
    if _verb(rule) in ("train", "finetune"):
        return TRAIN_JOB
    if gpu_count(config, rule, method):
        return GPU_JOB
    if _verb(rule) in LIGHT_VERBS:
        return LIGHT_JOB
    return CPU_JOB


def family_env(family: str) -> str:
    """Conda env file of the prediction jobs of ``family``, relative to ``rules/``."""
    return f"../envs/{family_named(family).env}.yaml"


def method_env(config: Mapping[str, Any], method: str) -> str:
    """Conda env file of the prediction jobs of ``method`` (its family's)."""
    return f"../envs/{family_of(config, method).env}.yaml"
