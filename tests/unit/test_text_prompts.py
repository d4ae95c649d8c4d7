"""Text prompt sets: structure checks, per-case class assignment from captions."""

import pytest

from medsegflow.errors import ConfigError, InputError
from medsegflow.text_prompts import check_prompt_set, prompt_words, resolve_texts

LABELS = {"background": 0, "lesion": 1, "liver": 2}
CASES = [
    {"case_id": "a", "caption": "Breast ultrasound with a benign hypoechoic lesion."},
    {"case_id": "b", "caption": "Breast ultrasound with a Malignant hypoechoic lesion."},
]


def test_assign_all_gives_every_case_the_same_sentences():
    texts = resolve_texts(
        {"labels": {"lesion": "A lesion.", "liver": ["The liver.", "A liver in CT."]}},
        cases=CASES,
        label_map=LABELS,
        key="datasets.us.text_prompts.generic",
    )
    assert texts == {
        "a": {1: ["A lesion."], 2: ["The liver.", "A liver in CT."]},
        "b": {1: ["A lesion."], 2: ["The liver.", "A liver in CT."]},
    }


def test_assign_caption_picks_the_class_named_in_the_caption():
    prompt_set = {
        "assign": "caption",
        "labels": {"lesion": {"benign": "A benign lesion.", "malignant": ["A malignant tumour."]}},
    }
    texts = resolve_texts(prompt_set, cases=CASES, label_map=LABELS, key="k")
    assert texts["a"] == {1: ["A benign lesion."]}
    assert texts["b"] == {1: ["A malignant tumour."]}


def test_caption_naming_no_class_names_the_case_and_source():
    prompt_set = {"assign": "caption", "labels": {"lesion": {"cyst": "x", "solid": "y"}}}
    with pytest.raises(InputError, match=r"cases.tsv: case a: caption .* names none"):
        resolve_texts(prompt_set, cases=CASES, label_map=LABELS, key="k")


def test_unknown_label_names_the_key():
    with pytest.raises(ConfigError, match=r"^k\.labels\.kidney: not a foreground label"):
        resolve_texts({"labels": {"kidney": "x"}}, cases=CASES, label_map=LABELS, key="k")
    with pytest.raises(ConfigError, match=r"^k\.labels\.background"):
        resolve_texts({"labels": {"background": "x"}}, cases=CASES, label_map=LABELS, key="k")


@pytest.mark.parametrize(
    ("prompt_set", "where"),
    [
        ({"labels": {}}, r"k\.labels:"),
        ({"assign": "row", "labels": {"lesion": "x"}}, r"k\.assign:"),
        ({"labels": {"lesion": [""]}}, r"k\.labels\.lesion:"),
        ({"assign": "caption", "labels": {"lesion": "x"}}, r"k\.labels\.lesion: with assign"),
        ({"assign": "caption", "labels": {"lesion": {"benign": []}}}, r"k\.labels\.lesion\.benign"),
    ],
)
def test_bad_prompt_sets_name_the_key(prompt_set, where):
    with pytest.raises(ConfigError, match="^" + where):
        check_prompt_set(prompt_set, "k")


def test_prompt_words_collects_lowercase_words():
    sets = {
        "g": {"labels": {"lesion": "A Lesion."}},
        "c": {"assign": "caption", "labels": {"lesion": {"benign": ["Benign mass 2"]}}},
    }
    assert prompt_words(sets) == ["2", "a", "benign", "lesion", "mass"]
