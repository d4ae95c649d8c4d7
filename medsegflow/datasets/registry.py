"""Adapters registered by name; ``prepare_dataset`` runs one and writes the canonical layout."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from medsegflow.datasets.canonical import AdapterResult, write_canonical_dataset
from medsegflow.errors import ConfigError

Adapter = Callable[..., AdapterResult]
"""Signature: ``adapter(params: Mapping[str, Any], *, seed: int) -> AdapterResult``."""


def _phantom(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    from medsegflow.datasets.phantom import build

    return build(params, seed=seed)


def _nifti_folder(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    from medsegflow.datasets.nifti_folder import build

    return build(params, seed=seed)


def _png_folder(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    from medsegflow.datasets.png_folder import build

    return build(params, seed=seed)


def _busi(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    from medsegflow.datasets.busi import build

    return build(params, seed=seed)


def _isic2016(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    from medsegflow.datasets.isic2016 import build

    return build(params, seed=seed)


ADAPTERS: dict[str, Adapter] = {
    "phantom": _phantom,
    "nifti_folder": _nifti_folder,
    "png_folder": _png_folder,
    "busi": _busi,
    "isic2016": _isic2016,
}


def get_adapter(name: str, *, key: str = "adapter") -> Adapter:
    """The adapter registered as ``name``; a :class:`ConfigError` naming ``key`` otherwise."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise ConfigError(
            f"{key}: unknown adapter '{name}'; known adapters: {', '.join(sorted(ADAPTERS))}"
        ) from None


def prepare_dataset(
    *,
    adapter: str,
    params: Mapping[str, Any],
    seed: int,
    out_dir: str | os.PathLike,
    key: str = "adapter",
) -> pd.DataFrame:
    """Run adapter ``adapter`` with ``params`` and write its cases into ``out_dir``."""
    result = get_adapter(adapter, key=key)(params, seed=seed)
    return write_canonical_dataset(result.cases, label_map=result.label_map, out_dir=out_dir)
