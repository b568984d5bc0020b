"""Errors raised at the boundary: each message names the thing and the fix.

`vqae.cli.main` turns any VqaeError into one line on stderr and a non-zero exit status.
"""

from __future__ import annotations


def _unwrap_worker_message(cls: type, message: str) -> str:
    """torch's DataLoader re-raises a worker's exception in the main process as
    `type(err)("Caught X in DataLoader worker process N.\nOriginal <formatted traceback>")`;
    the user should see our one-line message, the traceback's last line, not the rest."""
    if not (message.startswith(f"Caught {cls.__name__} ") and "\nOriginal " in message):
        return message
    marker = f"{cls.__module__}.{cls.__qualname__}: "
    start = message.rfind(marker)
    return message[start + len(marker):].rstrip("\n") if start >= 0 else message


class VqaeError(Exception):
    """A user-facing error; the message is shown as is."""

    exit_code = 2

    def __init__(self, message: str = ""):
        super().__init__(_unwrap_worker_message(type(self), str(message)))


class ConfigError(VqaeError):
    """An unknown config key, a wrong type or range, or an unreadable config file."""


class DataError(VqaeError):
    """Missing, malformed or unsafe input data, or output that cannot be written."""


SHOWN_CHARS = 200  # at most this much of a user's value is echoed in an error message


def cut(text: str, limit: int = SHOWN_CHARS) -> str:
    """Text for an error message, at most about `limit` characters."""
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text):,} characters)"


def one_line(err: BaseException, limit: int = SHOWN_CHARS) -> str:
    """An exception's message on one line (whitespace collapsed), cut to about `limit`
    characters; its type's name when it says nothing."""
    return cut(" ".join(str(err).split()), limit) or type(err).__name__


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """repr(value) for an error message, cut to about `limit` characters without building the
    whole repr of a huge value (a 1 MB string or list is echoed as its start and its size)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxdict, r.maxlist, r.maxtuple, r.maxset = 3, 8, 12, 12, 12
    r.maxstring = r.maxother = r.maxlong = limit
    text = r.repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if "..." in text and isinstance(value, (str, bytes, list, tuple, dict)):
        unit = "characters" if isinstance(value, (str, bytes)) else "items"
        text += f" ({len(value):,} {unit})"
    return text
