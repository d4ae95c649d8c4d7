"""The shared stages know no family: a guard derived from the registry.

Every family name and every family's own modules come from
:data:`medsegflow.families.registry.FAMILIES` (the module of its ``predict``, the module
of its ``promptable`` class), so a new family is covered without touching this file. The
guard scans the rules, the scripts and every shared stage (:data:`SHARED`) and fails on

- a string literal that is a family name (``"sam"``, ``'nnunet'``): a branch or a lookup
  by name;
- a comparison of a family (``family ==``, ``family in (``, ``["family"] ==``);
- an import of a family's own module (``medsegflow.families.<module>`` other than the
  registry and the :class:`Family` declaration, or a family's promptable model module).

What cannot move yet is in :data:`ALLOWED`, each with its reason. The guard is tested on a
copy of the tree with a planted branch.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from medsegflow.families.registry import FAMILIES

SHARED = (
    "rules",
    "scripts",
    "medsegflow/stages",
    "medsegflow/workflow.py",
    "medsegflow/planning.py",
    "medsegflow/cost.py",
    "medsegflow/robustness.py",
    "medsegflow/interactive.py",
    "medsegflow/promptable",
    "medsegflow/prediction",
)
"""What the guard scans (``.py`` and ``.smk`` files), relative to the repository root."""

SHARED_FAMILY_MODULES = ("medsegflow.families.family", "medsegflow.families.registry")
"""The modules of ``medsegflow/families/`` that every stage may import."""

_OWN_RULES = (
    "the get_* functions of a family's own stages, in the file its own rule file includes "
    "(a Family does not declare rule files yet), import its planning module; no shared "
    "rule or stage does"
)
ALLOWED: dict[str, str] = {
    "rules/nnunet_functions.smk: from medsegflow.families import nnunet as nnu": _OWN_RULES,
    "rules/sam3d_functions.smk: from medsegflow.families import sam3d as s3d": _OWN_RULES,
    "rules/saliency_functions.smk: from medsegflow.families import text_stages as txt": _OWN_RULES,
}
"""``"path: the offending line, stripped"`` -> why it stays. The function files of the
nnunet, sam3d and text_sam families' own stages (conversion, planning and training;
SAM-Med3D training; MedCLIP-SAMv2's saliency, coarse masks and tuning): the only place a
family module is imported outside the registry."""


def family_names() -> list[str]:
    return sorted(FAMILIES)


def family_modules() -> set[str]:
    """Each family's own modules, from the registry: its predictor's and its model class's."""
    modules = set()
    for family in FAMILIES.values():
        modules.add(family.predict.__module__)
        if family.promptable is not None:
            modules.add(family.promptable().__module__)
    return modules - set(SHARED_FAMILY_MODULES)


def _module_path(module: str) -> str:
    return module.replace(".", "/") + ".py"


def _scanned(root: Path) -> list[Path]:
    own = {_module_path(m) for m in family_modules()}
    files = []
    for entry in SHARED:
        path = root / entry
        found = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [
            p
            for p in found
            if p.suffix in (".py", ".smk") and p.relative_to(root).as_posix() not in own
        ]
    return files


def _family_package_modules() -> set[str]:
    """The modules of ``medsegflow/families/`` that a shared stage must not import: all but
    the registry and the declaration (a family's module, or a helper of one)."""
    import medsegflow.families as package

    stems = {p.stem for p in Path(package.__file__).parent.glob("*.py")} - {"__init__"}
    return stems - {m.rsplit(".", 1)[1] for m in SHARED_FAMILY_MODULES}


def violations(root: Path) -> list[str]:
    """``path:line: what`` for every family-specific line of the shared files under ``root``."""
    names = "|".join(re.escape(n) for n in family_names())
    literal = re.compile(rf"""(?<![\w.])(["'])({names})\1""")
    comparison = re.compile(r"""family["'\]]*\s*(==|!=|in\s*[(\[{]|not\s+in\s*[(\[{])""")
    forbidden = _family_package_modules()
    own_modules = family_modules()
    found = []
    for path in _scanned(root):
        rel = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            text = line.strip()
            if text.startswith("#") or f"{rel}: {text}" in ALLOWED:
                continue
            problems = []
            if match := literal.search(line):
                problems.append(f"names family {match.group(2)!r}")
            if comparison.search(line):
                problems.append("compares a family")
            for module in re.findall(r"medsegflow\.families\.(\w+)", line):
                if module in forbidden:
                    problems.append(f"imports medsegflow.families.{module}")
            if match := re.search(r"from medsegflow\.families import ([\w, ]+)", line):
                for module in (m.split()[0] for m in match.group(1).split(",") if m.strip()):
                    if module in forbidden:
                        problems.append(f"imports medsegflow.families.{module}")
            for module in own_modules:
                if module.startswith("medsegflow.families."):
                    continue  # covered above
                if re.search(rf"{re.escape(module)}\b", line):
                    problems.append(f"imports the family module {module}")
            found += [f"{rel}:{number}: {p}: {text}" for p in problems]
    return found


def test_the_guard_knows_every_family_from_the_registry():
    assert family_names() == sorted(FAMILIES)
    assert "medsegflow.promptable.sam_model" in family_modules()  # a model class's module
    assert all(m.startswith("medsegflow.") for m in family_modules())


def test_no_shared_stage_names_a_family(repo_root):
    found = violations(repo_root)
    assert not found, "family-specific lines in shared stages:\n" + "\n".join(found)


def test_every_allowed_line_is_still_there(repo_root):
    """A stale allow-list entry would hide the next branch on that line."""
    lines = {
        f"{p.relative_to(repo_root).as_posix()}: {line.strip()}"
        for p in _scanned(repo_root)
        for line in p.read_text(encoding="utf-8").splitlines()
    }
    assert set(ALLOWED) <= lines


@pytest.mark.parametrize(
    ("target", "planted"),
    [
        ("medsegflow/cost.py", 'if spec["family"] == "{name}":'),
        ("medsegflow/workflow.py", "if family in ({name!r},):"),
        ("medsegflow/stages/embed.py", "from medsegflow.families import {name}"),
        ("rules/sam.smk", "from medsegflow.families.{name} import FAMILY"),
        ("medsegflow/promptable/predict2d.py", "from medsegflow.promptable.sam_model import x"),
    ],
)
def test_the_guard_fails_on_a_planted_branch(repo_root, tmp_path, target, planted):
    copy = tmp_path / "tree"
    for entry in SHARED:
        source = repo_root / entry
        if source.is_dir():
            shutil.copytree(source, copy / entry)
        else:
            (copy / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / entry)
    assert violations(copy) == violations(repo_root)  # the copy scans like the tree
    name = family_names()[-1]
    with open(copy / target, "a", encoding="utf-8") as handle:
        handle.write("\n" + planted.format(name=name) + "\n")
    added = set(violations(copy)) - set(violations(repo_root))
    assert len(added) >= 1 and all(target in line for line in added), added
