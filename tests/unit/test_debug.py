"""The test-only ``debug:`` switches: which jobs fail, and only on their first attempt."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from medsegflow.config import load_config
from medsegflow.debug import InjectedFault, fail_first_attempt, inject_faults, selector_matches
from medsegflow.errors import ConfigError


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("predict_method", True),
        ("predict_method:phantom_us", True),
        ("predict_method:phantom_us:otsu_box", True),
        ("predict_method:phantom_us:kmeans_box", False),
        ("predict_method:phantom_ct", False),
        ("predict_method:phantom_us:otsu_box:extra", False),
        ("score_method", False),
        ("predict", False),
    ],
)
def test_selector_matches_rule_then_wildcards_in_order(selector, expected):
    job = {"rule": "predict_method", "wildcard_values": ["phantom_us", "otsu_box"]}
    assert selector_matches(selector, **job) is expected


def test_selected_job_fails_on_attempt_1_only(caplog):
    debug = {"fail_first_attempt": ["score_method:us:otsu"]}
    job = {"rule": "score_method", "wildcard_values": ["us", "otsu"]}
    with pytest.raises(InjectedFault, match=r"score_method:us:otsu fails on attempt 1"):
        fail_first_attempt(debug=debug, attempt=1, **job)
    with caplog.at_level("WARNING"):
        fail_first_attempt(debug=debug, attempt=2, **job)
    assert "runs normally on attempt 2" in caplog.text
    fail_first_attempt(debug=debug, attempt=1, rule="score_method", wildcard_values=["ct", "otsu"])
    fail_first_attempt(debug={}, attempt=1, **job)
    fail_first_attempt(debug=None, attempt=1, **job)


def test_selecting_a_rule_without_attempt_resource_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^debug.fail_first_attempt: rule plot_metric declares"):
        fail_first_attempt(
            debug={"fail_first_attempt": ["plot_metric"]},
            rule="plot_metric",
            wildcard_values=["dsc"],
            attempt=None,
        )


def fake_script_job(debug: dict | None, attempt: int | None) -> SimpleNamespace:
    """What a script's ``snakemake`` object offers: config, rule, wildcards, resources."""
    config = {"seed": 1} if debug is None else {"debug": debug}
    resources = {} if attempt is None else {"attempt": attempt}
    return SimpleNamespace(
        config=config, rule="predict_method", wildcards=["us", "otsu"], resources=resources
    )


def test_inject_faults_reads_the_script_job():
    debug = {"fail_first_attempt": ["predict_method:us"]}
    with pytest.raises(InjectedFault):
        inject_faults(fake_script_job(debug, attempt=1))
    inject_faults(fake_script_job(debug, attempt=3))
    inject_faults(fake_script_job(None, attempt=1))
    with pytest.raises(ConfigError):
        inject_faults(fake_script_job(debug, attempt=None))


def test_debug_block_is_declared_in_the_schema():
    base = {
        "datasets": {"us": {"adapter": "phantom", "params": {"kind": "us"}}},
        "prompts": {"box": {"source": "gt", "type": "box"}},
        "methods": {"otsu": {"family": "classical", "algorithm": "otsu", "prompts": "box"}},
    }
    assert load_config(base)["debug"] == {"fail_first_attempt": []}
    config = load_config({**base, "debug": {"fail_first_attempt": ["predict_method:us:otsu"]}})
    assert config["debug"]["fail_first_attempt"] == ["predict_method:us:otsu"]
    with pytest.raises(ConfigError, match=r"debug\.fail_always: unknown key"):
        load_config({**base, "debug": {"fail_always": ["x"]}})
    with pytest.raises(ConfigError, match=r"debug.fail_first_attempt.0"):
        load_config({**base, "debug": {"fail_first_attempt": ["predict method"]}})
