"""Loading a study's config: schema validation, ablation-grid expansion, cross-references.

``load_config(raw)`` returns a new, complete config: schema defaults filled in (the
schema files under ``medsegflow/schemas/`` are the only place a default lives), ablation grids
expanded into ordinary methods, cross-references checked. Every problem raises a
:class:`~medsegflow.errors.ConfigError` whose message starts with the dotted config key.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml

from medsegflow.errors import ConfigError
from medsegflow.families.registry import complete_method, method_schema, sam_model_schema
from medsegflow.schema import CONFIG_SCHEMA, first_problem, read_schema
from medsegflow.workflow import check_config

ABLATION_SEPARATOR = "__"


def config_schema() -> dict[str, Any]:
    """The config schema (``medsegflow/schemas/config.schema.yaml``) with its ``method`` definition
    and its ``sam_models`` entries generated from the family registry
    (:func:`medsegflow.families.method_schema`,
    :func:`~medsegflow.families.registry.sam_model_schema`)."""
    schema = copy.deepcopy(read_schema(CONFIG_SCHEMA))
    schema["$defs"]["method"] = method_schema()
    schema["properties"]["sam_models"]["additionalProperties"] = sam_model_schema()
    return schema


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``config`` validated against the schema with defaults filled in."""
    config = copy.deepcopy(dict(config))
    problem = first_problem(config_schema(), config)
    if problem:
        raise ConfigError(f"invalid config: {problem}")
    return config


def _grid_points(grid: Mapping[str, list]) -> Iterator[dict[str, Any]]:
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{dotted}: '{part}' is not a mapping in the base method")
    target[leaf] = value


def _format_value(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def ablation_method_name(base: str, point: Mapping[str, Any]) -> str:
    """Readable method name for one grid point, e.g. ``kmeans_box__n_clusters-3``."""
    parts = [f"{key}-{_format_value(value)}" for key, value in point.items()]
    return ABLATION_SEPARATOR.join([base, *parts])


def expand_ablations(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """All methods: the configured ones plus one per grid point of every ablation.

    Each generated method is a copy of the base method with the grid point's values set.
    """
    methods = {name: dict(cfg) for name, cfg in config["methods"].items()}
    for abl_name, ablation in config.get("ablations", {}).items():
        base = ablation["base"]
        if base not in config["methods"]:
            raise ConfigError(
                f"ablations.{abl_name}.base: unknown method '{base}'; "
                f"known: {', '.join(sorted(config['methods']))}"
            )
        for point in _grid_points(ablation["grid"]):
            name = ablation_method_name(base, point)
            if name in methods:
                raise ConfigError(
                    f"ablations.{abl_name}: generated method name '{name}' already exists"
                )
            method = copy.deepcopy(config["methods"][base])
            for key, value in point.items():
                if key == "family":
                    raise ConfigError(
                        f"ablations.{abl_name}.grid.family: the family of a method cannot be varied"
                    )
                _set_dotted(method, key, value)
            methods[name] = method
    return methods


def _check_references(config: Mapping[str, Any]) -> None:
    prompts = config.get("prompts", {})
    for name, method in config["methods"].items():
        ref = method.get("prompts")
        if ref is not None and ref not in prompts:
            raise ConfigError(
                f"methods.{name}.prompts: unknown prompt set '{ref}'; known: "
                f"{', '.join(sorted(prompts)) or 'none (add a prompts: block)'}"
            )
    for dname, dataset in config["datasets"].items():
        for key in ("methods", "exclude_methods"):
            for method in dataset.get(key) or []:
                if method not in config["methods"]:
                    raise ConfigError(f"datasets.{dname}.{key}: unknown method '{method}'")


def load_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validated config with defaults, ablations expanded into ``methods``, references checked.

    The expanded config keeps ``ablations`` as written (see :func:`ablation_origins`).
    """
    config = validate_config(raw)
    expanded = expand_ablations(config)
    for name in set(expanded) - set(config["methods"]):
        origin = ablation_origins(config).get(name, ("?", "?"))[0]
        try:
            expanded[name] = complete_method(expanded[name], name)
        except ConfigError as err:
            raise ConfigError(f"{err} (generated by ablations.{origin})") from None
    config["methods"] = expanded
    _check_references(config)
    check_config(config)
    return config


def ablation_origins(config: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """``{generated method: (ablation name, base method)}`` for every grid point."""
    return {
        ablation_method_name(ablation["base"], point): (name, ablation["base"])
        for name, ablation in config.get("ablations", {}).items()
        for point in _grid_points(ablation["grid"])
    }


def duplicate_keys(text: str) -> list[tuple[str, int, int]]:
    """``(dotted key, line, first line)`` of every key a YAML text gives twice in one mapping.

    PyYAML (and so Snakemake) silently keeps the later value of a duplicate key; a study
    config with ``jitter`` given twice would run with whichever came last.
    """
    found: list[tuple[str, int, int]] = []

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                dotted = f"{prefix}.{key}" if prefix else key
                line = key_node.start_mark.line + 1
                if key in first:
                    found.append((dotted, line, first[key]))
                else:
                    first[key] = line
                walk(value_node, dotted)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{prefix}[{index}]")

    for document in yaml.compose_all(text, Loader=yaml.SafeLoader):
        if document is not None:
            walk(document, "")
    return found


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """One YAML config file as a dict; :class:`ConfigError` naming the file (and line) when it
    cannot be read, is not YAML, is not a mapping or gives a key twice."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file ({err.reason})") from None
    try:
        duplicates = duplicate_keys(text)
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if duplicates:
        key, line, first = duplicates[0]
        raise ConfigError(
            f"{path}, line {line}: duplicate key '{key}' (also on line {first}); give each key once"
        )
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded


def check_config_files(paths: Sequence[str | os.PathLike]) -> None:
    """Read each config file Snakemake loaded (it has already merged them into ``config``),
    only to stop at what Snakemake lets pass: a duplicate key."""
    for path in paths:
        read_config_file(path)
