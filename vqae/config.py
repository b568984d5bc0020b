"""Nested dataclasses: the only home of defaults, types and valid ranges.

YAML files hold only the diff from these defaults; the CLI overrides single keys with
`--section.key=value` (or `--section.key value`). Unknown keys, wrong types and values out of
range raise a one-line ConfigError that names the key and what is valid.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqae.io import safe_yaml
from vqae.data.bands import PATCH_SIZE, S2_BANDS, check_bands
from vqae.errors import ConfigError, cut, shown


def choice(default: str, *options: str) -> Any:
    """A string field limited to `options` (the valid values appear in the error)."""
    return field(default=default, metadata={"choices": (default, *options)})


def bounded(default: Any, low: float | None = None, high: float | None = None,
            open_low: bool = False, open_high: bool = False, factory: bool = False,
            why: str = "") -> Any:
    """A number (or list of numbers) field with an allowed range; open ends exclude the bound.
    An int field without `high` is capped at INT_MAX; `why` says where a bound comes from."""
    meta = {"range": (low, high, open_low, open_high), "why": why}
    if factory:
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


DEVICES = ("auto", "cpu", "cuda")  # where one process runs its model; cuda without a GPU fails
INT_MAX = 2**31 - 1  # every int field fits a C int, whatever library it reaches
SEED_MAX = 2**31 - 1  # numpy seeds take < 2**32, and each process adds its rank (< 2**31)
# Codes per quantizer stage: the .vqz coder (constriction, 24-bit precision) takes fewer than
# 2**24 symbols, and the codec holds one K-entry float64 distribution per latent position and
# stage (225 x K x 8 bytes at 120 px and f=8: 118 MB at K=65536), the fit a K-entry count row
# per context: 2**16 keeps compress/fit-prior within a workstation's memory.
CODEBOOK_MAX = 2**16
DEPTH_MAX = 255  # a .vqz header stores the model's RVQ stages in one byte
WIDTH_MAX = 4096  # channels of a stage, the latent or the codes


def listed(default: list) -> Any:
    return field(default_factory=lambda: list(default))


@dataclass
class DataConfig:
    path: str = ""  # GeoTIFF folder, .tar/.tar.gz archive or LMDB; "" = the real BigEarthNet sample
    format: str = choice("auto", "geotiff", "lmdb")  # how to read data.path
    bands: list[str] = listed(S2_BANDS)  # S2 bands, in this order
    s1: bool = False  # append Sentinel-1 VV, VH (needs s1_name pairing from metadata.parquet)
    interpolation: str = choice("bicubic", "nearest", "bilinear", "area")  # 20/60 m upsampling
    resample: str = choice("auto", "cpu", "device")  # where 20/60 m bands are upsampled: cpu =
    # OpenCV per patch in the loader workers, device = torch on whole batches (uint16 transfer);
    # auto = device on CUDA, cpu otherwise (and always cpu with data.s1)
    stats: str = ""  # per-band mean/std JSON from `vqae stats`; "" = built-in BigEarthNet values
    subtract_offset: bool = False  # the model removes the +1000 L2A offset (baseline >= 04.00)
    splits: str = ""  # metadata.parquet (v2) or folder of train/val/test CSVs (v1); "" = hash
    exclude_snow_cloud: bool = False  # drop patches listed in the v2 snow/cloud/shadow parquet
    split_ratios: list[float] = bounded([0.8, 0.1, 0.1], 0, factory=True)  # hash split fractions
    scratch: str = ""  # where archives are staged; "" = $VQAE_SCRATCH, $SLURM_TMPDIR or $TMPDIR
    batch_size: int = bounded(16, 1, 65536)  # patches per step per process
    num_workers: int = bounded(2, 0, 1024)  # DataLoader worker processes; 0 = the main process
    pin_memory: bool = True  # only takes effect on CUDA
    persistent_workers: bool = True  # keep workers (and their LMDB handles) between epochs


@dataclass
class ModelConfig:
    image_size: int = field(default=PATCH_SIZE, metadata={  # patch side in pixels
        "choices": (PATCH_SIZE,), "why": "every reader yields 120x120 patches (1200 m at 10 m) "
        "and the codec sizes its index grid from this value"})
    widths: list[int] = bounded([64, 128, 256], 1, WIDTH_MAX, factory=True)  # channels per stage
    # (log2(f) + 1 stages; the last width repeats when f needs more stages than listed)
    downsample: int = field(default=8, metadata={"choices": (2, 4, 8, 16)})  # spatial factor f
    blocks_per_stage: int = bounded(2, 0, 64)  # residual blocks per stage
    latent_dim: int = bounded(64, 1, WIDTH_MAX)  # channels of the latent fed to the quantizer
    groups: int = bounded(32, 1, WIDTH_MAX)  # GroupNorm groups (clamped to divide the channels)
    activation: str = choice("silu", "gelu", "relu")  # nonlinearity of every block
    patch_means: bool = False  # centre each patch on its own band means (S2 only), sent as side
    # information (16 bits per band per file), instead of the data set's means: the quantizer
    # spends no bits on brightness, and sources with other brightness or offsets generalize
    patch_scales: bool = False  # with patch_means: divide each band by the patch's own scale,
    # a code per band sent beside the means, so that contrast costs no bits either


@dataclass
class QuantizerConfig:
    name: str = choice("vq", "rvq", "fsq")  # quantizer kind
    codebook_size: int = bounded(1024, 2, CODEBOOK_MAX, why="the .vqz coder and the prior's "
                                 "tables hold K entries per latent position")  # K codes per
    # RVQ stage (vq, rvq)
    codebook_dim: int = bounded(0, 0, WIDTH_MAX)  # > 0: low-dimensional codes with projections
    distance: str = choice("l2", "cosine")  # nearest-code metric
    depth: int = bounded(1, 1, DEPTH_MAX, why="a .vqz header stores the stages in one byte"
                         )  # rvq: number of residual quantizers (stages)
    shared_codebook: bool = False  # rvq: one codebook for all stages
    dropout: bool = False  # rvq quantizer dropout: random 1..depth stages per example in training
    ema: bool = True  # codebook learned by EMA (else by gradient with the codebook loss)
    decay: float = bounded(0.99, 0, 1, open_low=True, open_high=True)  # EMA decay
    eps: float = bounded(1e-5, 0, open_low=True)  # Laplace smoothing of EMA counts
    beta: float = bounded(0.25, 0)  # commitment loss weight
    kmeans_init: bool = True  # initialise the codebook by k-means on the first batch
    kmeans_iters: int = bounded(10, 1, 1000)  # Lloyd iterations for the k-means init
    revive_threshold: float = bounded(0.03, 0, 1)  # re-seed codes whose EMA usage is below this
    # fraction of the uniform share 1/K; 0 = never
    rotation_trick: bool = False  # rotation-trick gradient instead of plain straight-through
    rate_weight: float = bounded(0.0, 0)  # entropy-constrained VQ (vq, rvq; l2): each row takes
    # the code minimising squared distance + rate_weight * code length in bits (from EMA usage),
    # in training and when compressing; 0 = the nearest code
    levels: list[int] = bounded([8, 5, 5, 5], 2, CODEBOOK_MAX, factory=True)  # fsq: values per
    # latent channel; their product is the codebook size (at most CODEBOOK_MAX)


@dataclass
class OptimConfig:
    lr: float = bounded(3e-4, 0, open_low=True)  # AdamW peak learning rate
    weight_decay: float = bounded(1e-4, 0)  # AdamW weight decay
    betas: list[float] = bounded([0.9, 0.99], 0, 1, open_high=True, factory=True)  # AdamW betas
    warmup_steps: int = bounded(500, 0)  # linear warmup before the cosine decay
    min_lr_ratio: float = bounded(0.05, 0, 1)  # cosine floor as a fraction of lr
    grad_clip: float = bounded(1.0, 0)  # max global grad norm; 0 disables
    accumulate: int = bounded(1, 1)  # gradient accumulation steps


@dataclass
class TrainConfig:
    steps: int = bounded(100_000, 1)  # optimizer steps in total
    log_every: int = bounded(50, 1)  # steps between train/* logs
    eval_every: int = bounded(2000, 1)  # steps between evaluations (always one at the end)
    checkpoint_every: int = bounded(1000, 1)  # steps between checkpoints (always one at the end)
    keep_last: int = bounded(3, 1)  # step checkpoints kept besides best.pt
    amp: str = choice("auto", "bf16", "fp16", "none")  # auto = bf16 on CUDA, none on CPU
    compile: bool = False  # torch.compile the encoder and decoder (the quantizer stays eager)
    channels_last: bool = True  # memory format on CUDA
    augment: bool = True  # random flips and 90-degree rotations
    # each patch's contrast about its band means times a factor log-uniform in [low, high];
    # [1, 1] = off; e.g. [0.5, 12] meets clouds and snow that calm training scenes lack
    contrast_range: list[float] = bounded([1.0, 1.0], 0, 1000, open_low=True, factory=True)
    mse_weight: float = bounded(1.0, 0)  # MSE on normalized bands
    l1_weight: float = bounded(0.0, 0)  # L1 on normalized bands
    ssim_weight: float = bounded(0.0, 0)  # 1 - SSIM on digital numbers
    eval_depths: list[int] = bounded([], 1, factory=True)  # rvq depths for an RD sweep
    eval_images: int = bounded(4, 0)  # validation patches rendered at each eval
    eval_batches: int = bounded(0, 0)  # cap on eval batches; 0 = the whole split
    deterministic: bool = False  # torch deterministic algorithms (exact resume on CPU)


@dataclass
class RunConfig:
    dir: str = "runs/default"  # run folder: config, checkpoints, metrics.jsonl, images
    seed: int = bounded(0, 0, SEED_MAX, why="numpy takes 32-bit seeds and each process adds "
                        "its rank")  # seeds python, numpy and torch
    device: str = choice(*DEVICES)  # cuda without a GPU is an error
    tracker: str = choice("wandb", "none")  # metrics.jsonl is always written
    project: str = "vqae"  # wandb project
    name: str = ""  # run name in the tracker; "" = the run folder's name
    resume: str = ""  # "" = fresh run | auto = newest valid checkpoint in dir | a checkpoint path
    overwrite: bool = False  # a fresh run may replace the outputs of an earlier run in dir:
    # only what a run writes (checkpoints/ckpt-*.pt, best.pt, best.json; images/*_step<N>.png;
    # wandb/ run folders and logs; metrics.jsonl, summary.json, config.yaml, wandb_run_id.txt),
    # each checked before anything is deleted; any other file there, or an input (data, splits,
    # stats, config files) among them, refuses the run and deletes nothing


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)


PATH_KEYS = ("data.path", "data.stats", "data.splits", "data.scratch")  # stored absolute


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
