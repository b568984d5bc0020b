"""Reading a config: YAML files hold only the diff from the defaults of `vqae.config.sections`;
the CLI overrides single keys with `--section.key=value` (or `--section.key value`). Unknown
keys, wrong types and values out of range raise a one-line ConfigError that names the key and
what is valid.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import types
import typing
from pathlib import Path
from typing import Any

from vqae.config.sections import CODEBOOK_MAX, INT_MAX, PATH_KEYS, Config
from vqae.data.bands import check_bands
from vqae.errors import ConfigError, cut, shown
from vqae.io import safe_yaml

# ---- types --------------------------------------------------------------------------------

def _valid(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check `value` against the annotation `typ`; ints pass as floats, nothing else converts."""
    origin = typing.get_origin(typ)
    if origin is list:
        (item,) = typing.get_args(typ)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {shown(value)}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(typ):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {shown(value)} matches none of {typ}")
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):
        try:
            return float(value)  # PyYAML reads 1e-3 (no dot) as a string
        except ValueError:
            pass
    if typ in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {typ.__name__}, got a bool {shown(value)}")
    if typ is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a YAML file's `dir: 2024` should not need quoting
    if not isinstance(value, typ):
        raise ConfigError(f"{key}: expected {typ.__name__}, got {type(value).__name__} "
                          f"{shown(value)}")
    return value


def _merge(node: Any, diff: dict, prefix: str) -> Any:
    """Return a copy of dataclass `node` with the nested dict `diff` applied."""
    if not isinstance(diff, dict):
        what = f"a {type(diff).__name__} {shown(diff)}" if diff is not None else "nothing"
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {what}")
    hints = typing.get_type_hints(type(node))
    changes = {}
    for key, value in diff.items():
        name = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"unknown key {shown(name)}; valid keys here: {_valid(type(node))}")
        current = getattr(node, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, f"{name}.")
        else:
            changes[key] = _coerce(value, hints[key], name)
    return dataclasses.replace(node, **changes)


# ---- ranges -------------------------------------------------------------------------------

def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range_text(low, high, open_low, open_high) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if open_low else '>='} {_number(low)}")
    if high is not None:
        parts.append(f"{'<' if open_high else '<='} {_number(high)}")
    return " and ".join(parts)


def _check_field(key: str, value: Any, meta: typing.Mapping) -> None:
    why = f" ({meta['why']})" if meta.get("why") else ""
    if "choices" in meta and value not in meta["choices"]:
        valid = ", ".join(str(c) for c in meta["choices"])
        raise ConfigError(f"{key}={shown(value)} is not valid; choose one of: {valid}{why}")
    if "range" in meta:
        low, high, open_low, open_high = meta["range"]
        values = value if isinstance(value, list) else [value]
        if high is None and any(isinstance(v, int) for v in values):
            high = INT_MAX  # ints reach numpy/torch/C APIs: none is unbounded
        for v in values:
            too_low = low is not None and (v <= low if open_low else v < low)
            too_high = high is not None and (v >= high if open_high else v > high)
            if too_low or too_high or (isinstance(v, float) and not math.isfinite(v)):
                what = "each value" if isinstance(value, list) else "it"
                raise ConfigError(f"{key}={shown(value)} is out of range: {what} must be "
                                  f"{_range_text(low, high, open_low, open_high)}{why}")


def check_depth(depth: int | None, stages: int, what: str = "depth",
                error: type[Exception] = ConfigError) -> int:
    """The one check of an RVQ depth: `depth` (None: all `stages`) in 1..stages, else `error`
    naming `what`."""
    if depth is None:
        return stages
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
        raise error(f"{what} {depth!r} is not a whole number of RVQ stages")
    if not 1 <= depth <= stages:
        raise error(f"{what} {depth} is outside 1..{stages}, the model's RVQ stages")
    return depth


def _check_rules(cfg: Config) -> None:
    """Rules that span fields or depend on a value's size."""
    check_bands(cfg.data.bands)
    if len(cfg.data.split_ratios) != 3 or sum(cfg.data.split_ratios) <= 0:
        raise ConfigError(f"data.split_ratios={cfg.data.split_ratios}: give three non-negative "
                          "train/validation/test fractions, not all 0")
    if not cfg.model.widths:
        raise ConfigError("model.widths is empty; give channels per stage, e.g. [64, 128, 256]")
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas={cfg.optim.betas}: give two values, e.g. [0.9, 0.99]")
    low_high = cfg.train.contrast_range
    if len(low_high) != 2 or low_high[0] > low_high[1]:
        raise ConfigError(f"train.contrast_range={shown(low_high)}: give [low, high] with "
                          "low <= high, e.g. [0.5, 12] ([1, 1] = off)")
    if low_high != [1.0, 1.0] and cfg.data.s1:
        raise ConfigError("train.contrast_range stretches S2 digital numbers; S1 bands (dB) "
                          "have no such contrast: set data.s1=false or train.contrast_range=[1, 1]")
    if cfg.model.patch_scales and not cfg.model.patch_means:
        raise ConfigError("model.patch_scales divides each patch by its band scales about its "
                          "band means: set model.patch_means=true as well")
    if cfg.model.patch_means and cfg.data.s1:
        raise ConfigError("model.patch_means centres S2 bands on their uint16 means; S1 bands "
                          "(dB) have none: set data.s1=false or model.patch_means=false")
    q = cfg.quantizer
    if not q.levels:
        raise ConfigError("quantizer.levels is empty; give values per FSQ channel, e.g. [8, 5, 5, 5]")
    if q.name == "fsq" and math.prod(q.levels) > CODEBOOK_MAX:
        raise ConfigError(f"quantizer.levels={shown(q.levels)} make {math.prod(q.levels):,} FSQ "
                          f"codes, more than {CODEBOOK_MAX} (the .vqz coder and the prior's "
                          "tables hold one entry per code): use fewer or smaller levels")
    depth = q.depth if q.name == "rvq" else 1
    if q.name != "rvq" and (q.depth != 1 or q.dropout):
        raise ConfigError(f"quantizer.depth and quantizer.dropout need quantizer.name=rvq "
                          f"(got name={q.name}); set name=rvq or leave them at 1 / false")
    if q.rate_weight and (q.name == "fsq" or q.distance != "l2"):
        raise ConfigError(f"quantizer.rate_weight={q.rate_weight} needs name=vq or rvq with "
                          f"distance=l2 (got {q.name}, {q.distance}); set it to 0")
    for d in cfg.train.eval_depths:
        check_depth(d, depth, "train.eval_depths entry")
    t = cfg.train
    if t.mse_weight + t.l1_weight + t.ssim_weight <= 0:
        raise ConfigError("train.mse_weight, l1_weight and ssim_weight are all 0; "
                          "give at least one a positive weight")


def validate(cfg: Config) -> Config:
    """Raise ConfigError for any value out of its range or choices; returns cfg."""
    for section in dataclasses.fields(cfg):
        node = getattr(cfg, section.name)
        for f in dataclasses.fields(node):
            _check_field(f"{section.name}.{f.name}", getattr(node, f.name), f.metadata)
    _check_rules(cfg)
    return cfg


# ---- loading ------------------------------------------------------------------------------

def from_dict(diff: dict) -> Config:
    return validate(_merge(Config(), diff or {}, ""))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def field_type(dotted: str) -> Any:
    """The annotation of `section.key`, or None when the key does not exist."""
    node: Any = Config
    for part in dotted.split("."):
        hints = typing.get_type_hints(node) if dataclasses.is_dataclass(node) else {}
        if part not in hints:
            return None
        node = hints[part]
    return node


def parse_override(text: str) -> dict:
    """`section.key=value` -> nested dict.

    String fields take the text as is (`--data 010` is the folder "010", `a #b` keeps its `#`);
    other fields parse it as YAML (so 1e-3, true, [1, 2]) without anchors or aliases; text
    that is not YAML stays text (and then fails the type check).
    """
    if "=" not in text:
        raise ConfigError(f"override {shown(text)} must look like --section.key=value")
    dotted, raw = text.split("=", 1)
    dotted = dotted.lstrip("-")
    value: Any = raw
    if field_type(dotted) is not str and raw != "":
        try:
            value = safe_yaml.loads(raw, f"override --{cut(dotted)}")
        except safe_yaml.YamlSyntaxError:
            value = raw
    keys = dotted.split(".")
    out: dict = {}
    node = out
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict:
    """A config file's mapping (safe_yaml: no aliases, bounded size and depth, UTF-8)."""
    path = Path(path)
    if not os.path.lexists(path):
        raise ConfigError(f"config file {path} does not exist")
    data = safe_yaml.load_file(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} holds {shown(data, 60)} (of type "
                          f"{type(data).__name__}), not a mapping of sections such as "
                          "`model: {codebook_size: 512}`")
    return data


def load_config(files: list[str] | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- each YAML file in order <- each `section.key=value` override."""
    cfg = Config()
    for f in files or []:
        diff = read_yaml(f)
        try:
            cfg = _merge(cfg, diff, "")
        except ConfigError as err:
            raise ConfigError(f"{f}: {err}") from err
    for text in overrides or []:
        cfg = _merge(cfg, parse_override(text), "")
    return validate(cfg)


def absolute_paths(cfg: Config) -> Config:
    """Data paths made absolute, so a saved config works from any folder."""
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        node = getattr(cfg, section)
        value = getattr(node, key)
        if value:
            setattr(node, key, str(Path(value).expanduser().absolute()))
    return cfg


def dump_yaml(cfg: Config, path: str | Path | None = None) -> str:
    text = safe_yaml.dumps(to_dict(cfg), sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text
