"""Adapters registered by name; ``prepare_dataset`` runs one and writes the canonical layout."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from medsegflow.datasets._params import collected_listing_warnings
from medsegflow.datasets.canonical import AdapterResult, write_canonical_dataset
from medsegflow.errors import ConfigError

Adapter = Callable[..., AdapterResult]
"""Signature: ``adapter(params: Mapping[str, Any], *, seed: int) -> AdapterResult``."""


ADAPTER_MODULES: dict[str, str] = {
    "phantom": "medsegflow.datasets.phantom",
    "nifti_folder": "medsegflow.datasets.nifti_folder",
    "png_folder": "medsegflow.datasets.png_folder",
    "busi": "medsegflow.datasets.busi",
    "isic2016": "medsegflow.datasets.isic2016",
    "figshare_brain": "medsegflow.datasets.figshare_brain",
    "covid_qu_ex": "medsegflow.datasets.covid_qu_ex",
    "lung_ct": "medsegflow.datasets.lung_ct",
    "kvasir_seg": "medsegflow.datasets.kvasir_seg",
    "flare22": "medsegflow.datasets.flare22",
    "synapse": "medsegflow.datasets.synapse",
    "synapse_transunet": "medsegflow.datasets.synapse",
    "msd": "medsegflow.datasets.msd",
    "medsam_npz": "medsegflow.datasets.medsam_npz",
}
"""Adapter name -> module; the module's ``build`` (or ``build_<name>``) is the adapter.
Modules are imported on first use, so an adapter's optional readers load only when used."""

ADAPTERS = ADAPTER_MODULES


def get_adapter(name: str, *, key: str = "adapter") -> Adapter:
    """The adapter registered as ``name``; a :class:`ConfigError` naming ``key`` otherwise."""
    if name not in ADAPTER_MODULES:
        raise ConfigError(
            f"{key}: unknown adapter '{name}'; known adapters: {', '.join(sorted(ADAPTER_MODULES))}"
        )
    module = importlib.import_module(ADAPTER_MODULES[name])
    return getattr(module, f"build_{name}", None) or module.build


def prepare_dataset(
    *,
    adapter: str,
    params: Mapping[str, Any],
    seed: int,
    out_dir: str | os.PathLike,
    key: str = "adapter",
    allow_constant_images: bool = False,
) -> pd.DataFrame:
    """Run adapter ``adapter`` with ``params`` and write its cases into ``out_dir``; what the
    adapter warned about while listing is recorded with every case (``warnings``).

    A bad parameter is a :class:`ConfigError` naming the whole key: with ``key``
    ``datasets.<name>.adapter``, ``params.<key>`` becomes ``datasets.<name>.params.<key>``.
    """
    build = get_adapter(adapter, key=key)
    try:
        with collected_listing_warnings() as listing_warnings:
            result = build(params, seed=seed)
    except ConfigError as err:
        prefix = key[: -len("adapter")] if key.endswith(".adapter") else ""
        raise ConfigError(f"{prefix}{err}") from None
    return write_canonical_dataset(
        result.cases,
        label_map=result.label_map,
        out_dir=out_dir,
        allow_constant_images=allow_constant_images,
        dataset_warnings=listing_warnings,
    )
