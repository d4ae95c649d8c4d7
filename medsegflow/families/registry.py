"""The family registry: every registered :class:`~medsegflow.families.family.Family` by name
(built-in ones, then entry points), and method-config completion by family schema."""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Mapping
from typing import Any

from medsegflow.errors import ConfigError
from medsegflow.families import classical, nnunet, sam, sam3d, sam_auto, sam_semantic, text_sam
from medsegflow.families.family import Config, Family
from medsegflow.schema import complete, read_schema, schema_uri

ENTRY_POINT_GROUP = "medsegflow.families"

log = logging.getLogger(__name__)

BUILTIN: tuple[Family, ...] = (
    classical.FAMILY,
    sam.FAMILY,
    sam_auto.FAMILY,
    sam_semantic.FAMILY,
    text_sam.FAMILY,
    nnunet.FAMILY,
    sam3d.FAMILY,
    importlib.import_module("medsegflow.families.sam2").FAMILY,
    importlib.import_module("medsegflow.families.nninteractive").FAMILY,
)
"""The built-in families; a new one is added here (or registered by an entry point)."""


def _entry_point_families() -> list[Family]:
    found = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            family = entry.load()
        except Exception as err:  # a broken plugin must say which one it is
            raise ConfigError(
                f"family entry point '{entry.name}' ({entry.value}) cannot be loaded: {err}"
            ) from None
        if not isinstance(family, Family):
            raise ConfigError(
                f"family entry point '{entry.name}' ({entry.value}) is not a "
                f"medsegflow.families.Family but {type(family).__name__}"
            )
        found.append(family)
    return found


def _registry() -> dict[str, Family]:
    families: dict[str, Family] = {}
    for family in (*BUILTIN, *_entry_point_families()):
        if family.name in families:
            raise ConfigError(f"family '{family.name}' is registered twice")
        families[family.name] = family
    return families


FAMILIES: dict[str, Family] = _registry()
"""Every registered family by name: the built-in ones, then those of entry points."""


def family_named(name: str, *, key: str = "family") -> Family:
    """The family ``name``; :class:`ConfigError` naming ``key`` when it is unknown."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(
            f"{key}: '{name}' is not a known family; known: {', '.join(sorted(FAMILIES))}"
        ) from None


def family_of(config: Config, method: str) -> Family:
    """The family of ``method`` (a key of ``config["methods"]``)."""
    try:
        spec = config["methods"][method]
    except KeyError:
        raise ConfigError(f"methods.{method}: unknown method") from None
    return family_named(spec["family"], key=f"methods.{method}.family")


def method_schema() -> dict[str, Any]:
    """The JSON schema of one method: ``family`` is a registered family, and the method
    is checked against that family's schema file (which fills its defaults)."""
    return {
        "type": "object",
        "required": ["family"],
        "properties": {"family": {"enum": sorted(FAMILIES)}},
        "allOf": [
            {
                "if": {"properties": {"family": {"const": name}}, "required": ["family"]},
                "then": {"$ref": family.schema_uri},
            }
            for name, family in FAMILIES.items()
        ],
    }


SAM_MODEL_DEF = "sam_model"
"""The ``$defs`` entry of a promptable family's schema file that checks its own
``sam_models`` entries (keys other than SAM's, e.g. a package config)."""


def sam_model_schema() -> dict[str, Any]:
    """The JSON schema of one ``sam_models`` entry: a promptable family whose schema file
    defines ``$defs/sam_model`` checks (and fills the defaults of) the entries naming it
    as ``family``; every other entry is a SAM entry (``sam_models.schema.yaml``)."""
    own = {
        name: family
        for name, family in FAMILIES.items()
        if family.promptable is not None
        and SAM_MODEL_DEF in read_schema(family.schema).get("$defs", {})
    }
    sam = {"$ref": schema_uri("sam_models.schema.yaml", f"/$defs/{SAM_MODEL_DEF}")}
    if not own:
        return sam
    branches: list[dict[str, Any]] = [
        {
            "if": {"properties": {"family": {"const": name}}, "required": ["family"]},
            "then": {"$ref": f"{family.schema_uri}#/$defs/{SAM_MODEL_DEF}"},
        }
        for name, family in own.items()
    ]
    branches.append(
        {
            "if": {"properties": {"family": {"enum": sorted(own)}}, "required": ["family"]},
            "else": sam,
        }
    )
    return {"type": "object", "allOf": branches}


def complete_method(method: Mapping[str, Any], method_name: str = "<method>") -> dict[str, Any]:
    """``method`` validated against its family's schema, every default filled in.

    :class:`ConfigError` names ``methods.<method_name>.<key>`` (an unknown family, an
    unknown key, a bad value).
    """
    key = f"methods.{method_name}"
    if "family" not in method:
        raise ConfigError(f"{key}.family: required")
    family = family_named(method["family"], key=f"{key}.family")
    return complete(dict(method), family.schema_uri, key=key)
