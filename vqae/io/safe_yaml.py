"""The one YAML reader for config files, `--section.key=value` overrides and sweep files.

`yaml.safe_load` builds no objects, but it still expands aliases: ten levels of anchors, each
a list of nine aliases of the level below, are a few hundred bytes that expand to 9**10
strings (75 s, then MemoryError, from an error message that echoed the value). Config text
needs none of that, so this reader refuses anchors, aliases and merge keys outright, refuses
nesting deeper than MAX_DEPTH (the composer recurses once per level) and text that is not
UTF-8, and reports every problem as one ConfigError line that names its source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vqae.errors import ConfigError, one_line
from vqae.io.limits import read_small

MAX_DEPTH = 16  # nested mappings/lists; a config needs 3 (section, key, list)
MAX_FILE_BYTES = 1 << 20  # a config or sweep file holds a few hundred bytes
MAX_MESSAGE = 300  # characters of a YAML parser message kept in an error


class YamlSyntaxError(ConfigError):
    """The text is not YAML at all (an override may then be taken as plain text)."""


class _Refused(yaml.YAMLError):
    """YAML that is valid but not allowed here."""


def _where(event: yaml.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _Loader(yaml.SafeLoader):
    """SafeLoader without anchors, aliases or merge keys, and with a nesting limit."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(f"alias *{event.anchor[:40]} at {_where(event)}: anchors and aliases "
                           "are not allowed, write the value out")
        if getattr(event, "anchor", None) is not None:
            raise _Refused(f"anchor &{event.anchor[:40]} at {_where(event)}: anchors and "
                           "aliases are not allowed, write the value out")
        nested = isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent))
        self._depth += nested
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nesting deeper than {MAX_DEPTH} levels at {_where(event)}")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= nested

    def flatten_mapping(self, node):
        for key, _ in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                raise _Refused(f"merge key << at line {key.start_mark.line + 1}: merge keys are "
                               "not allowed, write the keys out")
        super().flatten_mapping(node)


def loads(text: str, source: str) -> Any:
    """Plain data (dicts, lists, scalars) from YAML `text`; `source` names it in errors
    ("config file a.yaml", "override --run.seed=..."). Not YAML: YamlSyntaxError; refused
    or unrepresentable (anchors, deep nesting, a 5000-digit int): ConfigError."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except _Refused as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        why = one_line(err, MAX_MESSAGE)
        raise YamlSyntaxError(f"{source} is not valid YAML: {why}") from None
    except (ValueError, OverflowError, RecursionError) as err:  # int('9' * 5000), ...
        why = one_line(err, MAX_MESSAGE)
        raise ConfigError(f"{source}: a value cannot be read ({why})") from None
    finally:
        loader.dispose()


def load_file(path: str | Path, what: str = "config file") -> Any:
    """`loads` of a regular file of at most MAX_FILE_BYTES of UTF-8 text."""
    data = read_small(path, MAX_FILE_BYTES, what, ConfigError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte 0x{data[err.start]:02x} at "
                          f"offset {err.start}); save it as UTF-8") from None
    return loads(text, f"{what} {path}")


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes a value repeated in the data out again instead of as an alias,
    so that what vqae writes, vqae (and `loads`) reads back."""

    def ignore_aliases(self, data) -> bool:
        return True


def dumps(data: Any, **options) -> str:
    """YAML text of plain data without anchors or aliases (`yaml.safe_dump` options)."""
    return yaml.dump(data, Dumper=_Dumper, **options)
