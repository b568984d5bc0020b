"""Errors raised at the boundary: each message names the thing and the fix.

`vqae.cli.main` turns any VqaeError into one line on stderr and a non-zero exit status.
"""


class VqaeError(Exception):
    """A user-facing error; the message is shown as is."""

    exit_code = 2


class ConfigError(VqaeError):
    """An unknown config key, a wrong type, or an unreadable config file."""


class DataError(VqaeError):
    """Missing, malformed or unsafe input data."""
