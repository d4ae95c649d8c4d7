"""Config validation against ``schemas/config.schema.yaml`` and ablation-grid expansion.

``load_config(raw)`` returns a new, complete config: schema defaults filled in, ablation
grids expanded into ordinary methods, cross-references checked. Every problem raises a
:class:`~medsegflow.errors.ConfigError` whose message starts with the dotted config key.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from medsegflow.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"
ABLATION_SEPARATOR = "__"


@cache
def load_schema(path: str | None = None) -> dict[str, Any]:
    """The config JSON schema (YAML file), parsed once per process."""
    with open(path or SCHEMA_PATH) as handle:
        return yaml.safe_load(handle)


def _with_defaults(validator_class: type) -> type:
    """A validator class that also fills ``default:`` values of declared properties."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<config>"


def _first_error(validator: Any, instance: Any) -> str | None:
    """The most relevant schema violation as one line: the dotted key, then the problem."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    message = " ".join(error.message.split())
    return f"{_key(error.absolute_path)}: {message}"


def validate_config(config: Mapping[str, Any], schema_path: str | None = None) -> dict[str, Any]:
    """A deep copy of ``config`` validated against the schema with defaults filled in."""
    config = copy.deepcopy(dict(config))
    problem = _first_error(_Validator(load_schema(schema_path)), config)
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


def _check_method(name: str, method: dict[str, Any], *, origin: str) -> dict[str, Any]:
    """Validate one (possibly generated) method against the method schema."""
    schema = load_schema()
    sub = {"$defs": schema["$defs"], "$ref": "#/$defs/method"}
    method = copy.deepcopy(method)
    problem = _first_error(_Validator(sub), method)
    if problem:
        raise ConfigError(f"invalid config: {origin}: generated method '{name}': {problem}")
    return method


def _check_references(config: Mapping[str, Any]) -> None:
    prompts = config.get("prompts", {})
    for name, model in config.get("sam_models", {}).items():
        key = model.get("weights")
        if model["arch"] != "demo" and key not in config.get("weights", {}):
            raise ConfigError(
                f"sam_models.{name}.weights: '{key}' is not a key under weights:; "
                f"known: {', '.join(sorted(config.get('weights', {}))) or 'none'}"
            )
        for dataset in model.get("train", {}).get("datasets", []):
            if dataset not in config["datasets"]:
                raise ConfigError(f"sam_models.{name}.train.datasets: unknown dataset '{dataset}'")
    for name, method in config["methods"].items():
        if method["family"] == "sam" and method["model"] not in config.get("sam_models", {}):
            raise ConfigError(
                f"methods.{name}.model: unknown SAM model '{method['model']}'; "
                f"known: {', '.join(sorted(config.get('sam_models', {}))) or 'none'}"
            )
        ref = method.get("prompts")
        if ref is not None and ref not in prompts:
            raise ConfigError(
                f"methods.{name}.prompts: unknown prompt set '{ref}'; known: "
                f"{', '.join(sorted(prompts)) or 'none (add a prompts: block)'}"
            )
    for dname, dataset in config["datasets"].items():
        for key in ("methods", "exclude_methods"):
            for method in dataset.get(key, []) or []:
                if method not in config["methods"]:
                    raise ConfigError(f"datasets.{dname}.{key}: unknown method '{method}'")


def load_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validated config with defaults, ablations expanded into ``methods``, references checked.

    The expanded config keeps ``ablations`` as written (see :func:`ablation_origins`).
    """
    config = validate_config(raw)
    expanded = expand_ablations(config)
    for name in set(expanded) - set(config["methods"]):
        expanded[name] = _check_method(name, expanded[name], origin="ablations")
    config["methods"] = expanded
    _check_references(config)
    return config


def ablation_origins(config: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """``{generated method: (ablation name, base method)}`` for every grid point."""
    return {
        ablation_method_name(ablation["base"], point): (name, ablation["base"])
        for name, ablation in config.get("ablations", {}).items()
        for point in _grid_points(ablation["grid"])
    }
