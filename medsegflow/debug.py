"""Test-only switches of the ``debug:`` config block: injected job faults.

``debug: {fail_first_attempt: [<selector>, ...]}`` makes every selected job raise
:class:`InjectedFault` on its first attempt and run normally on later ones, so tests can
check that a retried job (``--retries``, the SLURM profile's ``retries: 2``) finishes
with nothing lost or duplicated. A selector is a rule name, optionally followed by the
job's wildcard values in the rule's wildcard order, separated by ``:``:

- ``predict_method`` selects every prediction job;
- ``predict_method:phantom_us:otsu_box`` selects (dataset ``phantom_us``, method
  ``otsu_box``) only.

Scripts honour the switches with one call before their work: ``inject_faults(snakemake)``.
The attempt number comes from the rule's ``attempt`` resource (``rules/common.smk``
``get_attempt``), because Snakemake does not hand it to scripts otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from medsegflow.errors import ConfigError

log = logging.getLogger(__name__)

SEPARATOR = ":"


class InjectedFault(RuntimeError):
    """A failure injected on purpose by ``debug.fail_first_attempt``."""


class ScriptJob(Protocol):
    """What :func:`inject_faults` reads from the ``snakemake`` object of a script."""

    config: Mapping[str, Any]
    rule: str
    wildcards: Any
    resources: Any


def selector_matches(selector: str, *, rule: str, wildcard_values: Sequence[str]) -> bool:
    """True when ``selector`` (``rule[:value...]``) names this job.

    A selector with values must give at most as many values as the job has wildcards;
    they are compared in order, so ``predict_method:phantom_us`` selects every method
    on ``phantom_us``.
    """
    name, *values = selector.split(SEPARATOR)
    if name != rule or len(values) > len(wildcard_values):
        return False
    return all(want == have for want, have in zip(values, wildcard_values, strict=False))


def fail_first_attempt(
    *,
    debug: Mapping[str, Any] | None,
    rule: str,
    wildcard_values: Sequence[str],
    attempt: int | None,
) -> None:
    """Raise :class:`InjectedFault` if this job is selected and ``attempt`` is 1.

    ``attempt`` is None when the rule declares no ``attempt`` resource; selecting such a
    rule raises :class:`ConfigError` naming ``debug.fail_first_attempt``.
    """
    selectors = (debug or {}).get("fail_first_attempt") or []
    chosen = [
        s for s in selectors if selector_matches(s, rule=rule, wildcard_values=wildcard_values)
    ]
    if not chosen:
        return
    if attempt is None:
        raise ConfigError(
            f"debug.fail_first_attempt: rule {rule} declares no 'attempt' resource "
            "(add attempt=get_attempt to its resources:)"
        )
    job = SEPARATOR.join([rule, *wildcard_values])
    if attempt == 1:
        raise InjectedFault(f"debug.fail_first_attempt: {chosen[0]!r}: {job} fails on attempt 1")
    log.warning("debug.fail_first_attempt: %s runs normally on attempt %d", job, attempt)


def inject_faults(job: ScriptJob) -> None:
    """Apply the ``debug:`` switches of the config to the running script's job.

    ``job`` is the ``snakemake`` object of a workflow script (config, rule, wildcards,
    resources). Does nothing when the config has no ``debug:`` block.
    """
    debug = job.config.get("debug")
    if not debug:
        return
    attempt = job.resources.get("attempt")
    fail_first_attempt(
        debug=debug,
        rule=job.rule,
        wildcard_values=[str(v) for v in job.wildcards],
        attempt=None if attempt is None else int(attempt),
    )
