"""Text prompts of the text-driven methods (MedCLIP-SAMv2): which sentences each case gets.

A dataset's ``text_prompts:`` block names prompt sets; a ``text_sam`` method picks one
(``text_prompts: <set>``), and an ablation grid can vary it. A set maps each label name of
the dataset to sentences, in one of two assignment modes:

- ``assign: all`` (default): every case gets the same sentences, e.g. a generic set
  (``lesion: ["A medical image of a lesion."]``) or an organ/modality-specific one;
- ``assign: caption``: class-specific sentences (``lesion: {benign: [...], malignant:
  [...]}``); each case gets the sentences of the one class whose name occurs as a word
  in its caption (``cases.tsv``, column ``caption``).

Class-specific prompts at test time use label knowledge (the class of the lesion), as in
the seed study; docs/families/text_sam.md says so next to the results.

Several sentences for one label give one saliency map each, averaged
(:mod:`medsegflow.saliency`). Label names must be keys of the dataset's ``labels.json``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from medsegflow.errors import ConfigError, InputError

ASSIGN_MODES = ("all", "caption")


def _sentences(value: Any, key: str) -> list[str]:
    """A non-empty list of non-empty sentences from a string or a list of strings."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{key}: must be a sentence or a non-empty list of sentences")
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{key}: {item!r} is not a non-empty sentence")
    return [item.strip() for item in items]


def check_prompt_set(prompt_set: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Check a prompt set's structure (not its label names); returns it normalised:
    ``{"assign": mode, "labels": {label: [sentences] | {class: [sentences]}}}``."""
    assign = prompt_set.get("assign", "all")
    if assign not in ASSIGN_MODES:
        raise ConfigError(f"{key}.assign: {assign!r} is not one of {ASSIGN_MODES}")
    labels = prompt_set.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise ConfigError(f"{key}.labels: must map label names to sentences")
    normalised: dict[str, Any] = {}
    for label, value in labels.items():
        label_key = f"{key}.labels.{label}"
        if assign == "all":
            normalised[label] = _sentences(value, label_key)
            continue
        if not isinstance(value, Mapping) or not value:
            raise ConfigError(
                f"{label_key}: with assign: caption, must map class names to sentences"
            )
        normalised[label] = {
            str(cls): _sentences(sentences, f"{label_key}.{cls}")
            for cls, sentences in value.items()
        }
    return {"assign": assign, "labels": normalised}


def _case_class(classes: Sequence[str], caption: str, *, case_id: str, source: str) -> str:
    words = set(re.findall(r"[a-z0-9]+", caption.lower()))
    found = [cls for cls in classes if cls.lower() in words]
    if len(found) != 1:
        raise InputError(
            f"{source}: case {case_id}: caption {caption!r} names "
            f"{'none' if not found else ' and '.join(found)} of the classes {list(classes)}; "
            "assign: caption needs exactly one"
        )
    return found[0]


def resolve_texts(
    prompt_set: Mapping[str, Any],
    *,
    cases: Sequence[Mapping[str, Any]],
    label_map: Mapping[str, int],
    key: str,
    source: str = "cases.tsv",
) -> dict[str, dict[int, list[str]]]:
    """``{case_id: {label value: sentences}}`` for ``cases`` (rows with ``case_id`` and,
    for ``assign: caption``, ``caption``).

    Raises :class:`ConfigError` naming ``key`` (``datasets.<d>.text_prompts.<set>``) for a
    label name missing from ``label_map``, and :class:`InputError` naming ``source`` for a
    case whose caption does not name exactly one class.
    """
    checked = check_prompt_set(prompt_set, key)
    values: dict[str, int] = {}
    for label in checked["labels"]:
        if label not in label_map or label_map[label] == 0:
            known = ", ".join(n for n, v in label_map.items() if v != 0)
            raise ConfigError(f"{key}.labels.{label}: not a foreground label; known: {known}")
        values[label] = int(label_map[label])
    texts: dict[str, dict[int, list[str]]] = {}
    for case in cases:
        case_id = str(case["case_id"])
        per_label: dict[int, list[str]] = {}
        for label, sentences in checked["labels"].items():
            if checked["assign"] == "caption":
                caption = str(case.get("caption") or "")
                cls = _case_class(list(sentences), caption, case_id=case_id, source=source)
                sentences = sentences[cls]
            per_label[values[label]] = list(sentences)
        texts[case_id] = per_label
    return texts


def prompt_words(prompt_sets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Lower-case words of every sentence of ``prompt_sets`` (for a demo CLIP vocabulary)."""
    words: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            words.update(re.findall(r"[a-z0-9]+", value.lower()))
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for prompt_set in prompt_sets.values():
        walk(prompt_set.get("labels", {}))
    return sorted(words)


def dataset_texts(
    text_prompts: Mapping[str, Any],
    *,
    cases_tsv: str | Any,
    preprocessed_dir: str | Any,
) -> dict[str, dict[int, list[str]]]:
    """:func:`resolve_texts` for every case of a dataset: ``text_prompts`` is
    ``{"key": "datasets.<d>.text_prompts.<set>", "set": {...}}`` (the rules' parameter),
    captions come from the canonical ``cases.tsv``, labels from the preprocessed
    ``labels.json``."""
    from pathlib import Path

    from medsegflow.datasets.canonical import read_cases, read_label_map

    cases = read_cases(Path(cases_tsv).parent)
    return resolve_texts(
        text_prompts["set"],
        cases=cases.to_dict("records"),
        label_map=read_label_map(preprocessed_dir),
        key=text_prompts["key"],
        source=str(cases_tsv),
    )
