"""Errors that stop a run with one line naming the file or key and the problem."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input data: the message names the file and what is wrong with it."""


class ConfigError(ValueError):
    """Bad configuration: the message names the config key and what is wrong."""


class InputWarning(UserWarning):
    """Suspect input that is written all the same (documented in docs/bad_input.md)."""


BAD_INPUT = (InputError, ConfigError)
"""The errors a user can fix from the message alone: shown as their lines, never a traceback."""


def one_line(err: BaseException) -> str:
    """The message of ``err`` as shown to the user: its lines, without a traceback.

    A message spans several lines only when it lists several problems, one line each.
    """
    lines = [line.rstrip() for line in str(err).splitlines() if line.strip()]
    return "\n".join(lines) or type(err).__name__
