"""Errors a user can cause by what they type."""

from __future__ import annotations


class ConfigError(Exception):
    """Bad input from the user: an unknown key, a wrong type, an impossible value, missing data.

    The command line prints ``str(error)`` (one line naming the key) and exits with status 2.

    Args:
        key: the dotted config key at fault, e.g. ``"federation.concurrency"``.
        message: what is wrong and what is allowed.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class OutOfMemory(Exception):
    """A client job ran out of memory (a device's or the host's): the run stops, keeping its last
    checkpoint. The command line prints ``str(error)`` (one line: which job, how much memory, what to
    lower) and exits with status 3."""
