"""Parameter checks and case planning shared by the ``nifti_folder`` and ``png_folder`` adapters.

Every adapter parameter is addressed as ``params.<key>`` in error messages, so a bad value
points at the config entry to fix. Problems with files raise :class:`InputError` naming the
file; problems with parameters raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import logging
import math
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsegflow.datasets.canonical import SPLITS, assign_splits
from medsegflow.errors import ConfigError, InputError
from medsegflow.logs import console_warning

log = logging.getLogger(__name__)

COMMON_KEYS = (
    "root",
    "images",
    "modality",
    "labels",
    "splits",
    "split",
    "split_all",
    "captions",
    "caption",
)
"""Parameters every folder adapter accepts."""

_DEFERRED: contextvars.ContextVar[ListedProblems | None] = contextvars.ContextVar(
    "deferred_listing_checks", default=None
)
"""The problems recorded while listing in a :func:`deferred_listing_checks` block; None
outside one."""


class ListedProblems(list):
    """The problem lines a :func:`deferred_listing_checks` block recorded; ``warnings`` holds
    the lines of :func:`listing_warning`."""

    def __init__(self) -> None:
        super().__init__()
        self.warnings: list[str] = []


@contextlib.contextmanager
def deferred_listing_checks() -> Iterator[ListedProblems]:
    """Within the block, problems found while an adapter lists its cases do not raise.

    ``verify`` lists every dataset this way, so one bad file does not hide the problems of
    all the other files. The block yields a list that collects, one line each naming the
    file, the problems adapters report with :func:`listing_problem` (an image without its
    mask, an unreadable header, a file that is not named as the dataset names its files,
    ...): the adapter leaves that case out and lists the others. :func:`check_labels_exist`
    and :func:`check_case_ids` record nothing: their cases stay listed, and verify reports
    a missing label file when that case is read and counts duplicate ids, a line each.
    Outside the block every one of these checks raises :class:`InputError` at the first
    problem, as a normal run stops there.
    """
    problems = ListedProblems()
    token = _DEFERRED.set(problems)
    try:
        yield problems
    finally:
        _DEFERRED.reset(token)


def listing_problem(problem: str | InputError) -> None:
    """Report a problem found while listing cases (a line per problem, each naming a file).

    Raises :class:`InputError` with it, unless within :func:`deferred_listing_checks`:
    then its lines are recorded and this returns, and the adapter goes on without the case
    or file at fault. Every listing-time check of the adapters goes through here.
    """
    recorded = _DEFERRED.get()
    if recorded is None:
        raise problem if isinstance(problem, InputError) else InputError(problem)
    recorded += [line for line in str(problem).splitlines() if line.strip()]


_COLLECTED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "collected_listing_warnings", default=None
)


@contextlib.contextmanager
def collected_listing_warnings() -> Iterator[list[str]]:
    """Within the block, the :func:`listing_warning` lines of a run are also gathered in
    the yielded list (the data job records them with every case of the dataset)."""
    collected: list[str] = []
    token = _COLLECTED.set(collected)
    try:
        yield collected
    finally:
        _COLLECTED.reset(token)


def listing_warning(message: str) -> None:
    """Report something an adapter accepts while listing but the user should know (cases a
    split or caption mapping names that are not there, images skipped as asked): a
    ``WARNING:`` line on the console and in the job log (and in the block's list of
    :func:`collected_listing_warnings`), or within :func:`deferred_listing_checks`
    (``verify``) a warning of the dataset's report."""
    recorded = _DEFERRED.get()
    if recorded is not None:
        recorded.warnings.append(message)
        return
    console_warning(log, message)
    if (collected := _COLLECTED.get()) is not None:
        collected.append(message)


def listing_deferred() -> bool:
    """Whether problems found while listing are recorded (``verify``) rather than raised."""
    return _DEFERRED.get() is not None


def get_path_template(
    params: Mapping[str, Any], key: str, field: str, *, default: str | None = None
) -> str:
    """``params[key]``: a path template with ``{field}`` and optionally ``{dir}``;
    :class:`ConfigError` naming the key when it is malformed or lacks ``{field}``."""
    template = get_str(params, key, default=default)
    try:
        a = template.format(**{field: "a", "dir": "d"})
        differs = a != template.format(**{field: "b", "dir": "d"})
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"params.{key}: bad template '{template}' ({err!r}); it may use {{{field}}} and {{dir}}"
        ) from None
    if not differs:
        raise ConfigError(f"params.{key}: template '{template}' must contain {{{field}}}")
    return template


def is_safe_case_id(case_id: str) -> bool:
    """Whether ``case_id`` can be a file name (no path separator, tab, newline, leading dot)."""
    return bool(_SAFE_ID.match(case_id)) and not case_id.startswith(".")


DEFAULT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
BINARY_LABELS = {"background": 0, "foreground": 1}
_SAFE_ID = re.compile(r"^[^/\\\t\n\r]+$")


@dataclass(frozen=True)
class CasePlan:
    """Where one case comes from and where it goes (decided before any file is read)."""

    case_id: str
    image: Path
    label: Path
    split: str
    caption: str


def check_keys(params: Mapping[str, Any], allowed: Collection[str], *, adapter: str) -> None:
    """Raise a :class:`ConfigError` naming the first unknown ``params.<key>``."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"params: expected a mapping of adapter parameters, got {params!r}")
    unknown = sorted(k for k in params if k not in allowed)
    if unknown:
        raise ConfigError(
            f"params.{unknown[0]}: unknown parameter for adapter '{adapter}'; "
            f"known: {', '.join(sorted(allowed))}"
        )


def get_str(params: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    """``params[key]`` as a non-empty string (required when ``default`` is None)."""
    value = params.get(key, default)
    if value is None:
        raise ConfigError(f"params.{key}: required parameter is missing")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"params.{key}: expected a non-empty string, got {value!r}")
    return value


def get_bool(params: Mapping[str, Any], key: str, *, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"params.{key}: expected true or false, got {value!r}")
    return value


def get_mapping(params: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """``params[key]`` as a dict with string keys, or None when absent.

    Integer keys become strings: YAML reads ``split: {10018: test}`` with an int key, while
    case ids (file stems such as BUSI's ``10018``) are strings.
    """
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str | int) and not isinstance(k, bool) for k in value
    ):
        raise ConfigError(f"params.{key}: expected a mapping with string keys, got {value!r}")
    return {str(k): v for k, v in value.items()}


def get_label_map(params: Mapping[str, Any], *, default: Mapping[str, int]) -> dict[str, int]:
    """The label map ``{name: value}``: background 0, distinct non-negative integer values."""
    labels = get_mapping(params, "labels")
    if labels is None:
        return dict(default)
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise ConfigError(f"params.labels.{name}: expected an integer 0..65535, got {value!r}")
    if labels.get("background") != 0:
        raise ConfigError(f"params.labels: must map 'background' to 0, got {dict(labels)}")
    if len(set(labels.values())) != len(labels):
        raise ConfigError(f"params.labels: two names share one value in {dict(labels)}")
    return dict(labels)


def get_root(params: Mapping[str, Any]) -> Path:
    """The dataset folder ``params.root`` (relative paths are taken from the working folder)."""
    root = params.get("root")
    if root is None:
        raise ConfigError("params.root: required parameter is missing")
    if not isinstance(root, str | Path) or not str(root).strip():
        raise ConfigError(f"params.root: expected a folder path, got {root!r}")
    return Path(root).expanduser()


def list_images(root: Path, pattern: str, *, series_folders: bool = False) -> list[Path]:
    """Files under ``root`` matching glob ``pattern`` (``**`` allowed), sorted, hidden skipped.

    Hidden files (name starting with ``.``, e.g. macOS ``._case.nii.gz`` resource forks shipped
    in some MSD archives) are never images. With ``series_folders``, a matched folder that
    directly holds a (non-hidden) file is an image too, one DICOM series
    (:func:`medsegflow.io.read_dicom_series`), and the files inside it are not listed
    again; matched folders holding only folders are skipped.
    """
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found (params.root, images '{pattern}')")
    try:
        matched = sorted(p for p in root.glob(pattern) if not p.name.startswith("."))
    except (ValueError, NotImplementedError) as err:
        raise ConfigError(
            f"params.images: bad glob pattern '{pattern}' ({err}); give a "
            "pattern relative to params.root"
        ) from None
    series = {p for p in matched if series_folders and p.is_dir() and _holds_files(p)}
    found = [
        p
        for p in matched
        if p in series or (usable_file(p) and not any(d in series for d in p.parents))
    ]
    if not found:
        what = "files or DICOM series folders" if series_folders else "files"
        raise InputError(f"{root}: no {what} match the images pattern '{pattern}'")
    return found


def broken_link_problem(path: Path) -> str:
    """A line naming ``path`` when it is a symbolic link that leads nowhere or in a loop;
    "" otherwise (a regular file, a folder, a link to one, or nothing at all)."""
    try:
        path.stat()
    except OSError as err:
        if not path.is_symlink():
            return ""
        target = os.readlink(path)
        if err.errno == errno.ELOOP:
            return f"{path}: symbolic link loop (points to {target}); the file cannot be read"
        return f"{path}: broken symbolic link (points to {target}, which does not exist)"
    return ""


def usable_file(path: Path) -> bool:
    """Whether ``path`` is a file to list (a regular file or a link to one).

    A link that leads nowhere or in a loop is never dropped in silence: it is a
    :func:`listing_problem` (the run stops naming it; ``verify`` lists it) and False.
    """
    if problem := broken_link_problem(path):
        listing_problem(problem)
        return False
    return path.is_file()


def _holds_files(folder: Path) -> bool:
    return any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


def check_case_ids(case_ids: Mapping[Path, str]) -> None:
    """Raise :class:`InputError` for case ids that are not file names or are used twice
    (one line per image)."""
    first_image: dict[str, Path] = {}
    problems = []
    for image, case_id in case_ids.items():
        if not is_safe_case_id(case_id):
            problems.append(f"{image}: case id '{case_id}' cannot be used as a file name")
        elif case_id in first_image:
            problems.append(
                f"{image}: duplicate case id '{case_id}', also the id of {first_image[case_id]}"
            )
        else:
            first_image[case_id] = image
    if problems and not listing_deferred():
        raise InputError("\n".join(problems))


def check_labels_exist(
    pairs: Sequence[tuple[Path, Path]], *, kind: str = "label", series_folders: bool = False
) -> None:
    """Raise :class:`InputError` naming every image whose label file is missing (a line each).

    With ``series_folders``, a label folder (a DICOM series) counts as present too.
    """
    missing = [
        (image, label)
        for image, label in pairs
        if not (label.is_file() or (series_folders and label.is_dir()))
    ]
    if missing and not listing_deferred():
        raise InputError(
            "\n".join(
                f"{image}: {kind} file not found, expected {label}" for image, label in missing
            )
        )


def warn_unmatched_labels(
    pairs: Sequence[tuple[Path, Path]], *, pattern: str, kind: str = "label"
) -> None:
    """A :func:`listing_warning` for label files that no listed image points to: files in
    the folders of the expected labels, with their extension, that are neither an expected
    label nor a listed image. Such a file is usually a case whose image was deleted or
    misnamed; it is left out, and the user is told rather than scoring fewer cases in silence.
    """
    expected = {os.path.normpath(label) for _, label in pairs}
    expected |= {os.path.normpath(image) for image, _ in pairs}
    suffixes = {_full_suffix(label.name) for _, label in pairs}
    orphans = [
        path
        for folder in sorted({label.parent for _, label in pairs})
        if folder.is_dir()
        for path in sorted(folder.iterdir())
        if not path.name.startswith(".")
        and _full_suffix(path.name) in suffixes
        and os.path.normpath(path) not in expected
        and path.is_file()
    ]
    if orphans:
        more = f" ({len(orphans)} such files)" if len(orphans) > 1 else ""
        listing_warning(
            f"{orphans[0]}: {kind} file with no image matching params.images '{pattern}'; "
            f"left out{more}"
        )


def _full_suffix(name: str) -> str:
    return name[name.index(".") :] if "." in name else ""


def plan_cases(
    cases: Sequence[tuple[str, Path, Path]], params: Mapping[str, Any], *, modality: str, seed: int
) -> list[CasePlan]:
    """Add split and caption to ``(case_id, image, label)`` triples, in the given order."""
    ids = [case_id for case_id, _, _ in cases]
    splits = assign_case_splits(ids, params, seed=seed)
    captions = case_captions(ids, params, modality=modality)
    return [
        CasePlan(case_id, image, label, splits[case_id], captions[case_id])
        for case_id, image, label in cases
    ]


def assign_case_splits(
    case_ids: Sequence[str], params: Mapping[str, Any], *, seed: int
) -> dict[str, str]:
    """Split of every case from ``params.split_all``, ``params.split`` or ``params.splits``.

    At most one of the three may be given. ``split_all`` puts every case in one split;
    ``split`` maps every case id to a split; ``splits`` gives fractions for
    :func:`assign_splits` (default train 0.6, val 0.2, test 0.2), deterministic in ``seed``.
    """
    given = [k for k in ("split_all", "split", "splits") if params.get(k) is not None]
    if len(given) > 1:
        raise ConfigError(
            f"params.{given[1]}: give only one of params.split_all, params.split and params.splits"
        )
    if "split_all" in given:
        split = params["split_all"]
        if split not in SPLITS:
            raise ConfigError(f"params.split_all: expected one of {SPLITS}, got {split!r}")
        return {case_id: split for case_id in case_ids}
    if "split" in given:
        return _explicit_splits(case_ids, get_mapping(params, "split") or {})
    fractions = get_mapping(params, "splits") or DEFAULT_FRACTIONS
    for name, value in fractions.items():
        if name not in SPLITS:
            raise ConfigError(f"params.splits.{name}: unknown split; expected {SPLITS}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"params.splits.{name}: expected a fraction >= 0, got {value!r}")
    if sum(fractions.values()) <= 0:
        raise ConfigError(f"params.splits: fractions {dict(fractions)} add up to 0")
    return assign_splits(case_ids, fractions, seed=seed)


def _explicit_splits(case_ids: Sequence[str], mapping: Mapping[str, Any]) -> dict[str, str]:
    for case_id, split in mapping.items():
        if split not in SPLITS:
            raise ConfigError(f"params.split.{case_id}: expected one of {SPLITS}, got {split!r}")
    missing = [c for c in case_ids if c not in mapping]
    if missing:
        raise ConfigError(
            f"params.split: {len(missing)} case(s) have no split, e.g. {', '.join(missing[:5])}"
        )
    extra = sorted(set(mapping) - set(case_ids))
    if extra:
        listing_warning(
            f"params.split names {len(extra)} case(s) not found in the dataset, "
            f"e.g. {', '.join(extra[:5])}"
        )
    return {case_id: str(mapping[case_id]) for case_id in case_ids}


def case_captions(
    case_ids: Sequence[str], params: Mapping[str, Any], *, modality: str
) -> dict[str, str]:
    """Caption of every case: ``params.captions[case_id]``, else ``params.caption`` formatted.

    The template may use ``{case_id}`` and ``{modality}``; the default caption is empty.
    """
    captions = get_mapping(params, "captions") or {}
    template = params.get("caption", "")
    if not isinstance(template, str):
        raise ConfigError(f"params.caption: expected a string template, got {template!r}")
    try:
        template.format(case_id="", modality="")
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"params.caption: bad template '{template}' ({err!r}); it may use "
            "{case_id} and {modality}"
        ) from None
    for case_id, caption in captions.items():
        if not isinstance(caption, str):
            raise ConfigError(f"params.captions.{case_id}: expected a string, got {caption!r}")
    extra = sorted(set(captions) - set(case_ids))
    if extra:
        listing_warning(
            f"params.captions names {len(extra)} case(s) not found in the dataset, "
            f"e.g. {', '.join(extra[:5])}"
        )
    return {c: captions.get(c, template.format(case_id=c, modality=modality)) for c in case_ids}


def get_spacing(
    params: Mapping[str, Any],
    key: str,
    *,
    key_name: str | None = None,
    lengths: Sequence[int] = (2, 3),
) -> tuple[float, ...] | None:
    """``params[key]`` as a spacing in mm: ``(x, y, z)``, or ``(x, y, 1.0)`` from ``[x, y]``
    (with ``lengths=(2,)``: ``(x, y)``); None when absent. :class:`ConfigError` names
    ``params.<key_name or key>`` for anything but ``lengths`` positive finite numbers."""
    value = params.get(key)
    if value is None:
        return None
    if (
        isinstance(value, str | bytes)
        or not isinstance(value, Sequence)
        or len(value) not in lengths
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
            for v in value
        )
    ):
        shapes = " or ".join(["[x, y]", "[x, y, z]"][n - 2] for n in lengths)
        raise ConfigError(
            f"params.{key_name or key}: expected {shapes} spacing in mm > 0, got {value!r}"
        )
    values = tuple(float(v) for v in value)
    return values if len(values) == 3 or tuple(lengths) == (2,) else (*values, 1.0)
