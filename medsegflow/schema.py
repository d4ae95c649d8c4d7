"""JSON-schema machinery: the schema files in ``medsegflow/schemas/``, ``$ref``, defaults.

The schema files are the only place a config default lives. Every block of the config is
completed here: validated against its schema, with the ``default:`` of each absent key
filled in (also inside ``$ref``'d and ``if``/``then`` subschemas), and every problem
reported as one :class:`~medsegflow.errors.ConfigError` line that starts with the dotted
config key.

Files refer to each other with relative ``$ref`` (``"../common.schema.yaml#/$defs/voting"``),
resolved against each file's own location; a family defined outside the package (an
entry point, see :mod:`medsegflow.families`) names its schema by path.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.jsonschema
import yaml

from medsegflow.errors import ConfigError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
CONFIG_SCHEMA = SCHEMA_DIR / "config.schema.yaml"


def schema_uri(path: str | Path, fragment: str = "") -> str:
    """``file://`` URI of a schema file (relative paths are under ``medsegflow/schemas/``)."""
    path = Path(path)
    if not path.is_absolute():
        path = SCHEMA_DIR / path
    return path.resolve().as_uri() + (f"#{fragment}" if fragment else "")


@cache
def _read_uri(uri: str) -> dict[str, Any]:
    if not uri.startswith("file://"):
        raise ConfigError(f"schema reference {uri!r}: only schema files can be referenced")
    path = Path(uri.removeprefix("file://"))
    try:
        with open(path, encoding="utf-8") as handle:
            contents = yaml.safe_load(handle)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read schema file ({err.strerror})") from None
    if not isinstance(contents, dict):
        raise ConfigError(f"{path}: a schema file must hold a mapping")
    # every file is Draft 2020-12; without "$schema" jsonschema keeps the default-filling
    # validator class when it follows a $ref into the file (with it, it would switch to
    # the plain Draft 2020-12 validator, and no default of that file would be filled)
    contents.pop("$schema", None)
    return {**contents, "$id": uri}


def read_schema(path: str | Path) -> dict[str, Any]:
    """The parsed schema file (``$id`` set to its URI), cached per process; do not mutate."""
    return _read_uri(schema_uri(path))


def _retrieve(uri: str) -> referencing.Resource:
    return referencing.Resource.from_contents(
        _read_uri(uri), default_specification=referencing.jsonschema.DRAFT202012
    )


REGISTRY: referencing.Registry = referencing.Registry(retrieve=_retrieve)


def _with_defaults(validator_class: type) -> type:
    """A validator class that also fills the ``default:`` values of declared properties."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _dotted(prefix: str, path: Any) -> str:
    parts = [prefix] if prefix else []
    return ".".join([*parts, *(str(p) for p in path)]) or "<config>"


def first_problem(schema: Mapping[str, Any], instance: Any, *, key: str = "") -> str | None:
    """The most relevant violation of ``schema`` by ``instance`` as one line (dotted key
    under ``key``, then the problem), or None. Fills defaults into ``instance``."""
    validator = _Validator(dict(schema), registry=REGISTRY)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    path = list(error.absolute_path)
    message = " ".join(error.message.split())
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        if extra and allowed:
            path.append(extra[0])
            message = f"unknown key; allowed: {', '.join(allowed)}"
    return f"{_dotted(key, path)}: {message}"


def complete(instance: Any, ref: str | Path, *, key: str) -> Any:
    """A deep copy of ``instance`` validated against the schema ``ref``, defaults filled.

    Args:
        instance: a config block (e.g. one method, one prompt set).
        ref: a schema file (relative to ``medsegflow/schemas/``, absolute, or a ``file://`` URI)
            with an optional ``#/$defs/...`` fragment, e.g.
            ``"common.schema.yaml#/$defs/gt_prompt"``.
        key: the block's dotted config key, which starts every error message.

    Raises:
        ConfigError: ``<key>.<sub key>: <problem>``.
    """
    path, _, fragment = str(ref).partition("#")
    uri = str(ref) if path.startswith("file://") else schema_uri(path, fragment)
    instance = copy.deepcopy(instance)
    problem = first_problem({"$ref": uri}, instance, key=key)
    if problem:
        raise ConfigError(problem)
    return instance
