"""Evaluation over a whole split: distortion in digital numbers, rates and codebook health."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable

import torch
from torch.utils.data import DistributedSampler

from vqae.atomic import write_json
from vqae.config import Config
from vqae.data.device_input import DeviceInput, Prefetcher
from vqae.data.loader import Loader
from vqae.data.readers import PatchDataset
from vqae.data.source import ALL, DataSource, point_at
from vqae.data.splits import canonical_split
from vqae.distributed import DistEnv
from vqae.errors import ConfigError
from vqae.metrics import MetricAccumulator
from vqae.models import Autoencoder
from vqae.signals import Stopped

log = logging.getLogger(__name__)


def eval_loader(ds: PatchDataset, cfg: Config, env: DistEnv) -> Loader:
    sampler = (DistributedSampler(ds, env.world_size, env.rank, shuffle=False)
               if env.enabled else None)
    return Loader(ds, batch_size=cfg.data.batch_size, sampler=sampler, shuffle=False,
                  num_workers=cfg.data.num_workers,
                  pin_memory=env.device.startswith("cuda"),
                  generator=torch.Generator().manual_seed(0))  # keeps the global RNG as is


def eval_depths(model: Autoencoder, requested: list[int]) -> list[int | None]:
    """None = full depth; plus the requested RVQ depths for an RD sweep."""
    depth = model.quantizer.depth
    bad = [n for n in requested if not 1 <= n <= depth]
    if bad:
        raise ConfigError(f"depths {bad} outside 1..{depth}, the model's quantizer depth")
    return [None] + sorted(n for n in set(requested) if n != depth)


@torch.no_grad()
def evaluate(model: Autoencoder, loader: Iterable[dict], inputs: DeviceInput,
             depths: list[int | None] = (None,), max_batches: int = 0,
             autocast=contextlib.nullcontext,
             stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """Metrics of `model` on `loader`, its batches brought to the device by `inputs`; keys
    `psnr`, ... at full depth, `depth<n>/psnr`, ... per n. `stop` is asked before each batch
    (under DDP it must answer alike on every rank: every rank has as many batches); when it
    says yes, Stopped is raised."""
    was_training = model.training
    model.eval()
    try:
        return _evaluate(model, loader, inputs, depths, max_batches, autocast, stop)
    finally:
        model.train(was_training)


def _evaluate(model, loader, inputs, depths, max_batches, autocast, stop) -> dict[str, float]:
    device = inputs.device
    offsets = model.normalize.offsets()
    accs = {n: MetricAccumulator(model.bands, model.quantizer.codebook_size, offsets,
                                 model.side_bits())
            for n in depths}
    losses = torch.zeros(2, dtype=torch.float64, device=device)  # [sum mse, batches]
    for i, batch in enumerate(Prefetcher(loader, inputs)):
        if max_batches and i >= max_batches:
            break
        if stop is not None and stop():
            raise Stopped(f"evaluation stopped after {i} batches")
        x = inputs(batch)  # (B, C, H, W) float32 digital numbers
        for n, acc in accs.items():
            with autocast():
                out = model(x, depth=n)
            recon = out.recon.float()
            acc.update(x, model.to_dn(recon, out.centres), out.indices)
            if n is None:
                losses += torch.stack([torch.mean((recon - out.target) ** 2).double(),
                                       torch.ones((), dtype=torch.float64, device=device)])
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(losses)
    metrics = {"loss/mse": float(losses[0] / losses[1].clamp(min=1))}
    for n, acc in accs.items():
        acc.reduce()
        prefix = "" if n is None else f"depth{n}/"
        metrics.update({prefix + k: v for k, v in acc.compute().items()})
    return metrics


def choose_split(split: str | None, source: DataSource) -> str:
    """The split to evaluate: as asked, else `test`, saying so when it is only a name hash."""
    if split is not None:
        return split
    if source.table is None:
        log.warning("the data has no split metadata and no --split was given: evaluating the "
                    "test split chosen by name hash; pass --split all for every patch")
    return "test"


def run_evaluate(ckpt: str, data: str | None, split: str | None, out: str | None,
                 device_name: str = "auto", depths: list[int] | None = None,
                 splits: str | None = None) -> dict:
    from vqae.checkpoint import load_model
    from vqae.distributed import single_device
    from vqae.tracking import format_table

    env = DistEnv(device=str(single_device(device_name)))
    model, cfg = load_model(ckpt, env.device)
    cfg.data = point_at(cfg.data, data, splits)
    inputs = DeviceInput.for_config(cfg.data, env.torch_device)
    with DataSource(cfg.data) as source:
        split = choose_split(split, source)
        description = source.describe(split)
        print(f"evaluating {description}")
        ds = source.dataset(split, native=inputs.native)
        metrics = evaluate(model, eval_loader(ds, cfg, env), inputs,
                           eval_depths(model, depths or cfg.train.eval_depths))
    metrics = {"split": split if split == ALL else canonical_split(split), "patches": len(ds),
               **metrics}
    print(format_table(metrics, title=f"{description} - {ckpt}"))
    if out:
        write_json(out, metrics)
    return metrics

