"""The config's sections: nested dataclasses, the only home of defaults, types and valid
ranges (a comment per field). Parsing, overrides and validation: `vqae.config.parse`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vqae.data.bands import PATCH_SIZE, S2_BANDS


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
