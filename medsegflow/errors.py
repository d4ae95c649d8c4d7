"""Errors that stop a run with one line naming the file or key and the problem."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input data: the message names the file and what is wrong with it."""


class ConfigError(ValueError):
    """Bad configuration: the message names the config key and what is wrong."""
