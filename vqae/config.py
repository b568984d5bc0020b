"""Nested dataclasses: the only home of defaults and types.

YAML files hold only the diff from these defaults; the CLI overrides single keys with
`--section.key=value`. Unknown keys and wrong types raise ConfigError naming the valid keys.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vqae.errors import ConfigError

S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


@dataclass
class DataConfig:
    path: str = ""  # GeoTIFF folder, .tar/.tar.gz archive or LMDB; "" = the real BigEarthNet sample
    format: str = "auto"  # auto | geotiff | lmdb
    bands: list[str] = field(default_factory=lambda: list(S2_BANDS))  # S2 bands, in this order
    s1: bool = False  # append Sentinel-1 VV, VH (needs s1_name pairing from metadata.parquet)
    interpolation: str = "bicubic"  # upsampling of 20/60 m bands: nearest | bilinear | bicubic | area
    stats: str = ""  # per-band mean/std JSON from `vqae stats`; "" = built-in BigEarthNet values
    subtract_offset: bool = False  # remove the +1000 L2A offset (processing baseline >= 04.00)
    splits: str = ""  # metadata.parquet (v2) or folder of train/val/test CSVs (v1); "" = hash
    exclude_snow_cloud: bool = False  # drop patches listed in the v2 snow/cloud/shadow parquet
    split_ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # hash split
    scratch: str = ""  # where archives are staged; "" = $VQAE_SCRATCH, $SLURM_TMPDIR or $TMPDIR
    batch_size: int = 16  # patches per step per process
    num_workers: int = 2  # DataLoader worker processes
    pin_memory: bool = True  # only takes effect on CUDA
    persistent_workers: bool = True  # keep workers (and their LMDB handles) between epochs


@dataclass
class ModelConfig:
    in_bands: int = 12  # filled from data.bands (+2 with s1) when the model is built
    image_size: int = 120  # patch side in pixels; the decoder crops its output to it
    widths: list[int] = field(default_factory=lambda: [64, 128, 256])  # channels per stage
    # (log2(f) + 1 stages; the last width repeats when f needs more stages than listed)
    downsample: int = 8  # spatial factor f in {2, 4, 8, 16}; latent is ceil(120 / f)
    blocks_per_stage: int = 2  # residual blocks per stage
    latent_dim: int = 64  # channels of the latent fed to the quantizer
    groups: int = 32  # GroupNorm groups (clamped to divide the channel count)
    activation: str = "silu"  # silu | gelu | relu


@dataclass
class QuantizerConfig:
    name: str = "vq"  # vq | rvq | fsq
    codebook_size: int = 1024  # K codes per level
    codebook_dim: int = 0  # > 0: low-dimensional codes with in/out projections
    distance: str = "l2"  # l2 | cosine
    levels: int = 1  # residual levels n_q (rvq)
    shared_codebook: bool = False  # rvq: one codebook for all levels
    dropout: bool = False  # rvq quantizer dropout: random 1..n_q levels per example in training
    ema: bool = True  # codebook learned by EMA (else by gradient with the codebook loss)
    decay: float = 0.99  # EMA decay
    eps: float = 1e-5  # Laplace smoothing of EMA counts
    beta: float = 0.25  # commitment loss weight
    kmeans_init: bool = True  # initialise the codebook by k-means on the first batch
    kmeans_iters: int = 10  # Lloyd iterations for the k-means init
    dead_threshold: float = 0.03  # re-seed codes whose EMA usage < this x uniform share 1/K; 0 off
    rotation_trick: bool = False  # rotation-trick gradient instead of plain straight-through
    fsq_levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # fsq levels per dim


@dataclass
class OptimConfig:
    lr: float = 3e-4  # AdamW peak learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])  # AdamW betas
    warmup_steps: int = 500  # linear warmup before the cosine decay
    min_lr_ratio: float = 0.05  # cosine floor as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    accumulate: int = 1  # gradient accumulation steps


@dataclass
class TrainConfig:
    steps: int = 100_000  # optimizer steps in total
    log_every: int = 50  # steps between train/* logs
    eval_every: int = 2000  # steps between evaluations (always one at the end)
    checkpoint_every: int = 1000  # steps between checkpoints (always one at the end)
    keep_last: int = 3  # step checkpoints kept besides best.pt
    amp: str = "auto"  # auto (bf16 on CUDA, none on CPU) | bf16 | fp16 | none
    compile: bool = False  # torch.compile the model
    channels_last: bool = True  # memory format on CUDA
    augment: bool = True  # random flips and 90-degree rotations
    mse_weight: float = 1.0  # MSE on normalized bands
    l1_weight: float = 0.0  # L1 on normalized bands
    ssim_weight: float = 0.0  # 1 - SSIM on de-normalized bands
    eval_levels: list[int] = field(default_factory=list)  # rvq level counts for an RD sweep
    eval_images: int = 4  # validation patches rendered at each eval
    eval_batches: int = 0  # cap on eval batches; 0 = the whole split
    deterministic: bool = False  # torch deterministic algorithms (exact resume on CPU)


@dataclass
class RunConfig:
    dir: str = "runs/default"  # run folder: config, checkpoints, metrics.jsonl, images
    seed: int = 0  # seeds python, numpy and torch
    device: str = "auto"  # auto | cpu | cuda; asking for cuda without a GPU is an error
    tracker: str = "wandb"  # wandb | none (metrics.jsonl is always written)
    project: str = "vqae"  # wandb project
    name: str = ""  # run name in the tracker; "" = the run folder's name
    resume: str = ""  # "" = fresh run | auto = newest valid checkpoint in dir | a checkpoint path


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


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
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(typ):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} matches none of {typ}")
    if typ is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null, got {value!r}")
        return None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):
        try:
            return float(value)  # PyYAML reads 1e-3 (no dot) as a string
        except ValueError:
            pass
    if typ in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {typ.__name__}, got a bool {value!r}")
    if typ is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # `--run.dir=2024` should not need quoting
    if not isinstance(value, typ):
        raise ConfigError(f"{key}: expected {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


def _merge(node: Any, diff: dict, prefix: str) -> Any:
    """Return a copy of dataclass `node` with the nested dict `diff` applied."""
    if not isinstance(diff, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {diff!r}")
    hints = _field_types(type(node))
    changes = {}
    for key, value in diff.items():
        name = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"unknown key '{name}'; valid keys here: {_valid(type(node))}")
        current = getattr(node, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, f"{name}.")
        else:
            changes[key] = _coerce(value, hints[key], name)
    return dataclasses.replace(node, **changes)


def from_dict(diff: dict) -> Config:
    return _merge(Config(), diff or {}, "")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> dict:
    """`section.key=value` -> nested dict; the value is parsed as YAML (so 1e-3, true, [1,2])."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like --section.key=value")
    dotted, raw = text.split("=", 1)
    keys = dotted.lstrip("-").split(".")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    node: dict = {}
    out = node
    for k in keys[:-1]:
        node[k] = {}
        node = node[k]
    node[keys[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    return data or {}


def load_config(files: list[str] | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- each YAML file in order <- each `section.key=value` override."""
    cfg = Config()
    for f in files or []:
        try:
            cfg = _merge(cfg, read_yaml(f), "")
        except ConfigError as err:
            raise ConfigError(f"{f}: {err}") from err
    for text in overrides or []:
        cfg = _merge(cfg, parse_override(text), "")
    return cfg


def dump_yaml(cfg: Config, path: str | Path | None = None) -> str:
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text
