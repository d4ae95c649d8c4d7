"""Source manifests: the raw files of a dataset, tracked so that editing one reruns its jobs.

The adapter job (``prepare_dataset``) reads raw files that are no file target of the
workflow, so Snakemake alone would never notice that a label was fixed. Each dataset read
from disk (a ``params.root``) therefore gets ``results/sources/{dataset}.tsv``: one line per
raw file with its path relative to the root, size and SHA-256, and the adapter job takes it
as input. The manifest is rewritten only when a line changes (a file edited, added,
removed, a link broken), so only the datasets whose sources really changed rerun; touching
a file without changing it reruns nothing.

Hashing stays cheap: ``results/sources/stat_cache/{dataset}.tsv`` caches each file's size,
modification time (ns) and hash, and a file is hashed again only when its size or
modification time changed. The first real run that sees a dataset hashes every file once;
a dry-run leaves a dataset without a manifest unhashed (:func:`update_manifests`).

The files tracked are every non-hidden file under ``params.root`` (links followed, hidden
files and folders skipped, as the adapters skip them), plus any other parameter that names
an existing file or folder outside the root. A link that leads nowhere, or in a loop, is a
line of its own (``dangling`` or ``loop``), so mending it changes the manifest too.
Datasets that are generated (no ``root``, e.g. the phantoms) have no manifest.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsegflow.errors import ConfigError
from medsegflow.io import write_text

log = logging.getLogger(__name__)

SOURCES = "results/sources/{dataset}.tsv"
STAT_CACHE = "results/sources/stat_cache/{dataset}.tsv"
"""Not beside the manifests: a dataset may be named ``x.stat`` (names allow dots)."""
HEADER = "path\tsize\tsha256"


@dataclass(frozen=True)
class SourceFile:
    """One raw file: ``path`` relative to the dataset root (or absolute outside it), ``size``
    in bytes and ``sha256``; a broken link has size -1 and ``dangling``/``loop`` as hash."""

    path: str
    size: int
    sha256: str

    def line(self) -> str:
        return f"{self.path}\t{self.size}\t{self.sha256}"


def source_roots(entry: Mapping[str, Any]) -> list[Path]:
    """The files and folders a dataset entry reads: ``params.root`` first, then every other
    string parameter naming an existing path outside it; [] for a generated dataset."""
    params = entry.get("params") if isinstance(entry, Mapping) else None
    if not isinstance(params, Mapping) or not isinstance(params.get("root"), str):
        return []
    root = Path(params["root"]).expanduser()
    found = [root]
    for key, value in params.items():
        if key == "root" or not isinstance(value, str) or not value.strip() or "\n" in value:
            continue
        path = Path(value).expanduser()
        if path.is_absolute() and path.exists() and not _is_within(path, root):
            found.append(path)
    return found


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def _walk(top: Path) -> Iterator[Path]:
    """Every non-hidden file or link under ``top`` (links to folders followed once)."""
    if not top.is_dir():
        yield top
        return
    seen: set[str] = set()
    for folder, dirs, files in os.walk(top, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a folder link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name
        for name in dirs:  # a link to a folder that is gone or loops is listed by os.walk
            path = Path(folder) / name
            if path.is_symlink() and not path.exists():
                yield path


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache(path: Path) -> dict[str, tuple[int, int, str]]:
    cache: dict[str, tuple[int, int, str]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return cache
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) == 4 and parts[1].lstrip("-").isdigit() and parts[2].isdigit():
            cache[parts[0]] = (int(parts[1]), int(parts[2]), parts[3])
    return cache


def scan_sources(
    entry: Mapping[str, Any], cache: Mapping[str, tuple[int, int, str]] | None = None
) -> tuple[list[SourceFile], dict[str, tuple[int, int, str]]]:
    """The dataset's source files and the new stat cache; a file is hashed only when its
    size or modification time differ from ``cache``'s."""
    cache = cache or {}
    files: list[SourceFile] = []
    new_cache: dict[str, tuple[int, int, str]] = {}
    roots = source_roots(entry)
    for index, top in enumerate(roots):
        if not top.exists() and not top.is_symlink():
            files.append(SourceFile(str(top) if index else ".", -1, "missing"))
            continue
        for path in _walk(top):
            name = path.relative_to(roots[0]).as_posix() if index == 0 else str(path)
            try:
                stat = path.stat()
            except OSError as err:
                # ELOOP: a link loop; ENOENT: a link to nothing
                kind = "loop" if err.errno == 40 else "dangling" if path.is_symlink() else "gone"
                files.append(SourceFile(name, -1, kind))
                continue
            if not path.is_file():
                continue
            cached = cache.get(name)
            if cached and cached[:2] == (stat.st_size, stat.st_mtime_ns):
                digest = cached[2]
            else:
                try:
                    digest = _hash(path)
                except OSError as err:
                    files.append(SourceFile(name, stat.st_size, f"unreadable ({err.strerror})"))
                    continue
            new_cache[name] = (stat.st_size, stat.st_mtime_ns, digest)
            files.append(SourceFile(name, stat.st_size, digest))
    return files, new_cache


def update_manifest(dataset: str, entry: Mapping[str, Any], *, workdir: Path = Path()) -> str:
    """Write ``results/sources/{dataset}.tsv`` when its content changed; return its path,
    or "" for a dataset without raw files (generated, or an entry that is not a mapping)."""
    if not source_roots(entry):
        return ""
    manifest = workdir / SOURCES.format(dataset=dataset)
    stat_cache = workdir / STAT_CACHE.format(dataset=dataset)
    files, cache = scan_sources(entry, _read_cache(stat_cache))
    root = Path(entry["params"]["root"]).expanduser()
    text = "\n".join([f"# root: {root}", HEADER, *(f.line() for f in files)]) + "\n"
    try:
        old = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        old = None
    cache_text = "\n".join(
        ["path\tsize\tmtime_ns\tsha256", *(f"{k}\t{s}\t{m}\t{h}" for k, (s, m, h) in cache.items())]
    )
    try:
        if old != text:
            write_text(manifest, text)
        if _read_cache(stat_cache) != cache:
            write_text(stat_cache, cache_text + "\n")
    except OSError as err:
        raise ConfigError(
            f"{manifest.parent}/: cannot write the source manifest of datasets.{dataset} "
            f"({err.strerror})"
        ) from None
    return SOURCES.format(dataset=dataset)


def update_manifests(
    datasets: Mapping[str, Any], *, write: bool = True, first_scan: bool = True
) -> dict[str, str]:
    """``{dataset: manifest path}`` for every dataset read from disk; with ``write`` (the main
    Snakemake process) each manifest is brought up to date first, otherwise (a cluster
    job) the existing ones are named as they are.

    Without ``first_scan`` (a dry-run), a dataset that has no manifest yet is left out
    rather than hashed in full, so that a dry-run of a large study stays quick; its data job
    runs anyway when its output is missing, and the first real run writes the manifest.
    """
    found = {}
    for name, entry in datasets.items():
        path = SOURCES.format(dataset=name) if source_roots(entry) else ""
        if path and write and (first_scan or Path(path).is_file()):
            path = update_manifest(name, entry)
        elif path and not Path(path).is_file():
            path = ""
        if path:
            found[name] = path
    return found
