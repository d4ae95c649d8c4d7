"""Logging helpers for workflow scripts: send everything a job prints to its log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator

from medsegflow.errors import BAD_INPUT, one_line

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def log_to(path: str | os.PathLike) -> Iterator[logging.Logger]:
    """Route ``logging``, stdout and stderr (tqdm bars too) to ``path`` for the block.

    Logs the wall time of the block on exit, and the error on failure, so each job's
    log says what was done and how long it took. Bad input (:data:`~medsegflow.errors.BAD_INPUT`)
    ends the job with its message alone on the console, one line per problem naming the file
    or key, and exit status 1; the log file holds the same line and then the traceback.
    """
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    root = logging.getLogger()
    with open(path, "w", encoding="utf-8", buffering=1) as handle:
        handler = logging.StreamHandler(handle)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        old_level = root.level
        root.setLevel(logging.INFO)
        log = logging.getLogger("medsegflow")
        start = time.perf_counter()
        with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
            try:
                yield log
            except BAD_INPUT as err:
                message = one_line(err)
                log.error("failed after %.1f s: %s", time.perf_counter() - start, message)
                handle.write("".join(traceback.format_exception(err)))
                _to_console(message)
                raise SystemExit(1) from None
            except BaseException as err:
                log.error("failed after %.1f s: %s", time.perf_counter() - start, err)
                raise
            else:
                log.info("done in %.1f s", time.perf_counter() - start)
            finally:
                root.removeHandler(handler)
                root.setLevel(old_level)
                sys.stdout.flush()


def console_warning(log: logging.Logger, message: str) -> None:
    """Log ``message`` as a warning and print it on the console too, also inside
    :func:`log_to` (whose stdout and stderr are the job's log file)."""
    log.warning("%s", message)
    if sys.stderr is not sys.__stderr__:
        _to_console(f"WARNING: {message}")


def _to_console(text: str) -> None:
    """``text`` on the process's own stderr in one write, so that the lines of jobs running
    side by side do not interleave."""
    if sys.__stderr__ is not None:
        sys.__stderr__.write(text + "\n")
        sys.__stderr__.flush()
