"""Per-job cluster resources: GPUs by rule verb and method family, attempt-scaled requests."""

from __future__ import annotations

import re

import pytest

import medsegflow.resources as res
from medsegflow import workflow as wf
from medsegflow.errors import ConfigError

CONFIG = {
    "datasets": {"us": {}},
    "methods": {
        "otsu": {"family": "classical"},
        "medsam": {"family": "sam"},
        "nnunet_2d": {"family": "nnunet"},
        "future": {"family": "not_yet_known"},  # a family nobody registered
    },
}


@pytest.mark.parametrize(
    ("rule", "method", "gpus"),
    [
        ("predict_method", "otsu", 0),
        ("predict_method", "medsam", 1),
        ("predict_nnunet", "nnunet_2d", 1),
        ("score_method", "medsam", 0),  # scoring a SAM method needs no GPU
        ("embed_images", None, 1),
        ("train_sam_model", None, 1),
        ("train_nnunet", None, 1),
        ("prepare_dataset", None, 0),
        ("plot_metric", None, 0),
    ],
)
def test_gpu_count_by_rule_verb_and_family(rule, method, gpus):
    assert res.gpu_count(CONFIG, rule, method) == gpus


def test_an_unregistered_family_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"methods\.future\.family: 'not_yet_known' is not a"):
        res.gpu_count(CONFIG, "predict_method", "future")


def test_job_resources_by_kind_and_attempt():
    assert res.job_resources(CONFIG, "predict_method", "otsu") == res.CPU_JOB
    assert res.job_resources(CONFIG, "predict_method", "medsam") == res.GPU_JOB
    assert res.job_resources(CONFIG, "train_sam_model") == res.TRAIN_JOB
    assert res.job_resources(CONFIG, "collect_tables") == res.LIGHT_JOB
    assert res.CPU_JOB.for_attempt(1) == res.CPU_JOB
    assert res.CPU_JOB.for_attempt(3) == res.JobResources(mem_mb=12000, runtime_min=360)
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        res.CPU_JOB.for_attempt(0)


def test_method_env_by_family():
    assert res.method_env(CONFIG, "otsu") == "../envs/base.yaml"
    assert res.method_env(CONFIG, "medsam") == "../envs/torch.yaml"
    assert res.method_env(CONFIG, "nnunet_2d") == "../envs/nnunet.yaml"


def test_dry_run_shows_each_jobs_requests(demo_plan):
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", demo_plan.stdout, re.M)
    by_rule = {}
    for rule, resources in jobs:
        by_rule.setdefault(rule, set()).add(resources)
    predict = [set(r.split(", ")) for r in by_rule["predict_method"]]
    assert len(predict) == 2  # classical jobs on CPU; SAM and nnU-Net jobs ask for a GPU
    cpu = [r for r in predict if "gpu=0" in r]
    gpu = [r for r in predict if "gpu=1" in r]
    assert len(cpu) == 1 and {"mem_mb=4000", "runtime=120", "attempt=1"} <= cpu[0]
    assert len(gpu) == 1 and {"mem_mb=16000", "runtime=360", "attempt=1"} <= gpu[0]
    assert all("gpu=1" in r for r in by_rule["embed_images"] | by_rule["train_nnunet"])
    assert all("mem_mb=2000" in r and "runtime=30" in r for r in by_rule["collect_tables"])
    assert all("gpu=" not in r for r in by_rule["score_method"])


def test_alternation_matches_exactly_the_names_and_stays_short():
    grid = [
        f"kmeans_box__n_clusters-{k}__polarity-{p}__smoothing_sigma-{s}"
        for k in range(2, 9)
        for p in ("auto", "bright", "dark")
        for s in ("0", "0.5", "1", "2", "4")
    ]
    names = ["otsu_box", "kmeans_box", "kmeans_box2", "k", *grid]
    pattern = wf.alternation(names)
    assert len(pattern) < len("|".join(names)) / 3
    regex = re.compile(f"(?:{pattern})")
    for name in names:
        assert regex.fullmatch(name), name
    near = [n + "x" for n in names] + [n[:-1] for n in names] + ["kmeans_box__n_clusters-9"]
    assert not [n for n in near if regex.fullmatch(n) and n not in names]
    assert wf.alternation(["otsu_box", "gt"]) == "otsu_box|gt"
    assert wf.alternation(["a.b", "a-b"]) == r"a(?:\-b|\.b)"  # sorted: the same in every run
    assert wf.alternation([]) == "(?!)"
