"""Checks the Snakefile runs while it is parsed, before Snakemake plans or locks anything.

Each problem ends the run with one line naming the file, folder or config key, and exit
status 1, without a traceback (:func:`exit_on_bad_input`):

- the config files Snakemake loaded give a key twice (:func:`medsegflow.config.check_config_files`);
- the config is invalid (:func:`medsegflow.config.load_config`), or a weight file is missing;
- an output folder (``results/``, ``logs/``, ``benchmarks/``) exists but cannot be written;
- a lock in ``.snakemake/locks`` was left by a run that was killed (:func:`check_stale_lock`).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from medsegflow.errors import BAD_INPUT, ConfigError, one_line

OUTPUT_FOLDERS = ("results", "logs", "benchmarks")
LOCKS = Path(".snakemake") / "locks"
_LOCK_FILE = re.compile(r"\d+\.(input|output)\.lock")
_OWNER = re.compile(r"medsegflow-(?P<host>[^/]+)-(?P<pid>\d+)\.pid")


@contextlib.contextmanager
def exit_on_bad_input() -> Iterator[None]:
    """Within the block, bad input (:data:`~medsegflow.errors.BAD_INPUT`) prints its message
    on stderr, one line per problem, and exits with status 1: no traceback."""
    try:
        yield
    except BAD_INPUT as err:
        print(one_line(err), file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def snakemake_args(argv: Sequence[str]):
    """Snakemake's own parse of its command line ``argv`` (``sys.argv``); None when the
    command line is not Snakemake's (e.g. the API)."""
    from snakemake.cli import get_argument_parser

    try:
        args, _ = get_argument_parser().parse_known_args(list(argv[1:]))
    except (SystemExit, Exception):  # argparse exits; Snakemake's own checks raise
        return None
    return args


def locking_run(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for a run that locks the working folder (not a dry-run,
    ``--unlock``, ``--nolock``, a lint or a listing)."""
    args = snakemake_args(argv)
    if args is None:
        return False
    quiet_flags = (
        "dryrun",
        "unlock",
        "nolock",
        "lint",
        "list_rules",
        "summary",
        "detailed_summary",
        "dag",
        "rulegraph",
        "filegraph",
        "cleanup_metadata",
        "list_target_rules",
    )
    return not any(getattr(args, flag, False) for flag in quiet_flags)


def check_writable(workdir: Path = Path(), *, depth: int = 3) -> None:
    """:class:`ConfigError` naming the working folder, or the first output folder (down to
    ``depth`` levels, e.g. ``results/predictions/<dataset>/<method>``), that exists but
    cannot be written (a run would fail writing into it with no word on where)."""
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise ConfigError(f"{_shown(workdir)}/: the working folder is not writable; run elsewhere")
    for name in OUTPUT_FOLDERS:
        top = workdir / name
        if not top.is_dir():
            continue
        for folder, dirs, _ in os.walk(top):
            level = len(Path(folder).relative_to(top).parts)
            dirs[:] = sorted(dirs) if level < depth else []
            if not os.access(folder, os.W_OK | os.X_OK):
                shown = _shown(Path(folder))
                mode = stat.filemode(Path(folder).stat().st_mode)
                raise ConfigError(
                    f"{shown}/: folder is not writable ({mode}); make it writable "
                    f"(chmod -R u+w {shown}) or run in another folder"
                )


def _shown(path: Path) -> str:
    return os.fspath(path) if str(path) else "."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def owner_file(workdir: Path = Path()) -> Path:
    return workdir / LOCKS / f"medsegflow-{socket.gethostname()}-{os.getpid()}.pid"


def check_stale_lock(workdir: Path = Path()) -> None:
    """:class:`ConfigError` when ``.snakemake/locks`` holds locks and every run of this
    workflow that could own them (:func:`claim_lock`) is gone from this machine.

    Snakemake removes ``.snakemake/locks`` when a run ends, also on Ctrl-C; only a killed run
    (``kill -9``, a power loss, an out-of-memory kill) leaves it. Locks of a run on another
    machine (a shared file system) or of a process still alive are left to Snakemake.
    """
    folder = workdir / LOCKS
    if not folder.is_dir():
        return
    names = [p.name for p in folder.iterdir()]
    if not any(_LOCK_FILE.fullmatch(n) for n in names):
        return
    owners = [m for n in names if (m := _OWNER.fullmatch(n))]
    host = socket.gethostname()
    if not owners or any(m["host"] != host or _alive(int(m["pid"])) for m in owners):
        return
    pids = ", ".join(sorted(m["pid"] for m in owners))
    raise ConfigError(
        f"{folder}/: locked by a run that was killed (process {pids} no longer exists); "
        "rerun the same command once with --unlock, then run it again"
    )


def claim_lock(workdir: Path = Path()) -> None:
    """Name this process as a possible owner of the locks Snakemake is about to take.

    Snakemake's lock files do not name their process; this file beside them does, so a
    later run can tell a lock left by a killed run (:func:`check_stale_lock`). Snakemake
    deletes the folder, and this file with it, when it unlocks.
    """
    path = owner_file(workdir)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{os.getpid()}\n", encoding="utf-8")
        host = socket.gethostname()
        for old in path.parent.iterdir():  # owners of earlier runs that never locked
            m = _OWNER.fullmatch(old.name)
            if m and old != path and m["host"] == host and not _alive(int(m["pid"])):
                old.unlink(missing_ok=True)


def before_run(argv: Sequence[str], *, main_process: bool, workdir: Path = Path()) -> None:
    """The checks of a real run in the main Snakemake process: writable output folders,
    no lock left by a killed run; then :func:`claim_lock`."""
    if not main_process or not locking_run(argv):
        return
    check_writable(workdir)
    check_stale_lock(workdir)
    claim_lock(workdir)
