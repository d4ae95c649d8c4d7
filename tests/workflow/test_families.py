"""The family registry is the one place a family is declared, and the library is layered.

- the registry, the families of the generated config schema, the schema files under
  ``medsegflow/schemas/families/`` and the runtime (env, GPU) table are the same set;
- the workflow logic names no family;
- every schema object rejects unknown keys and every optional key has a default;
- the import graph of ``medsegflow`` (imports inside functions included) has no cycle,
  between modules or between its top-level packages.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from medsegflow import resources
from medsegflow.config import config_schema
from medsegflow.families.family import CACHES
from medsegflow.families.registry import BUILTIN, FAMILIES
from medsegflow.promptable.interface import PROMPT_KINDS, PromptableModel
from medsegflow.schema import SCHEMA_DIR, schema_uri


def test_registry_schema_files_and_runtime_table_are_one_set(repo_root):
    """Every expectation comes from the registry: adding a family changes no test here."""
    names = set(FAMILIES)
    assert {f.name for f in BUILTIN} == names  # no entry-point family in the test env
    generated = config_schema()["$defs"]["method"]
    assert set(generated["properties"]["family"]["enum"]) == names
    assert {b["if"]["properties"]["family"]["const"] for b in generated["allOf"]} == names
    files = {p.name for p in (SCHEMA_DIR / "families").glob("*.schema.yaml")}
    assert files == {f"{name}.schema.yaml" for name in names}
    for name, family in FAMILIES.items():
        assert family.schema_uri == schema_uri(f"families/{name}.schema.yaml")
        schema = yaml.safe_load(
            (SCHEMA_DIR / "families" / f"{name}.schema.yaml").read_text(encoding="utf-8")
        )
        assert schema["properties"]["family"] == {"const": name}
        assert (repo_root / "envs" / f"{family.env}.yaml").is_file()
        assert family.cache in CACHES
        if family.promptable is not None:  # its model class implements the interface
            cls = family.promptable()
            assert issubclass(cls, PromptableModel) and cls.dims in (2, 3)
            assert set(cls.native_prompts) <= set(PROMPT_KINDS)
    assert set(resources.family_runtimes()) == names


def test_sam_models_are_built_by_a_promptable_family():
    """``sam_models.<m>.family`` names the family whose model class builds the model; its
    schema default is a registered promptable 2D family."""
    schema = yaml.safe_load((SCHEMA_DIR / "sam_models.schema.yaml").read_text(encoding="utf-8"))
    default = schema["$defs"]["sam_model"]["properties"]["family"]["default"]
    cls = FAMILIES[default].promptable()
    assert cls.dims == 2 and {"box", "points"} <= set(cls.native_prompts)


@pytest.mark.parametrize("module", ["workflow.py", "planning.py", "resources.py", "config.py"])
def test_the_workflow_logic_names_no_family(repo_root, module):
    source = (repo_root / "medsegflow" / module).read_text(encoding="utf-8")
    for name in FAMILIES:
        assert not re.search(rf"""["']{name}["']""", source), f"{module} names family {name}"
    assert "family ==" not in source and "family in (" not in source
    rules = "".join(p.read_text(encoding="utf-8") for p in (repo_root / "rules").glob("*.smk"))
    assert '["family"]' not in rules and "family ==" not in rules  # rules bind, never branch


def _objects(node, where):
    """(location, schema) of every object schema with declared properties."""
    if isinstance(node, dict):
        if "properties" in node and node.get("type", "object") == "object":
            yield where, node
        for key, value in node.items():
            yield from _objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{where}/{i}")


SHARED = {"sampling", "sam_train", "if", "sam_arch"}
"""Not objects of their own: a definition mixed into others with allOf, the recipe
dispatcher whose every recipe definition rejects unknown keys, and if-conditions; and
``sam_arch``, whose omitted keys take the values of the architecture its ``like`` names
(``arch_spec``), so no schema default can stand for them (it rejects unknown keys)."""


def test_every_schema_object_rejects_unknown_keys_and_optional_keys_have_defaults():
    files = sorted(SCHEMA_DIR.rglob("*.schema.yaml"))
    assert len(files) >= 8
    problems = []
    for path in files:
        for where, schema in _objects(yaml.safe_load(path.read_text(encoding="utf-8")), path.name):
            if where.rsplit("/", 1)[-1] in SHARED:
                continue
            if "additionalProperties" not in schema:
                problems.append(f"{where}: no additionalProperties")
            required = set(schema.get("required", ()))
            for key, sub in schema["properties"].items():
                if key in required or sub is True or (isinstance(sub, dict) and "const" in sub):
                    continue
                if not (isinstance(sub, dict) and "default" in sub):
                    problems.append(f"{where}.{key}: optional without a default")
    assert not problems, "\n".join(problems)


def _import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> imported medsegflow modules, imports inside functions included."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_imports_flow_one_way(repo_root):
    graph = _import_graph(repo_root / "medsegflow")
    assert "medsegflow.promptable.predict2d" in graph["medsegflow.families.sam"]  # lazy ones count
    assert _cycles(graph) == []
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        top = ".".join(module.split(".")[:2])
        packages[top] |= {".".join(t.split(".")[:2]) for t in targets} - {top}
    assert _cycles(packages) == []
    # the layers the design names: data and metrics never reach models or predictions
    for low in ("medsegflow.metrics", "medsegflow.plots", "medsegflow.prompts"):
        assert not packages[low] & {"medsegflow.models", "medsegflow.methods", "medsegflow.stages"}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
