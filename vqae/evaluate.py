"""Evaluation over a whole split: distortion in digital numbers, rates and codebook health."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

from vqae.config import Config, from_dict
from vqae.data.normalize import Normalizer
from vqae.data.readers import PatchDataset
from vqae.data.source import open_dataset
from vqae.distributed import DistEnv
from vqae.metrics import MetricAccumulator
from vqae.models import build_model

log = logging.getLogger(__name__)


def eval_loader(ds: PatchDataset, cfg: Config, env: DistEnv, device: torch.device) -> DataLoader:
    sampler = (DistributedSampler(ds, env.world_size, env.rank, shuffle=False)
               if env.enabled else None)
    return DataLoader(ds, batch_size=cfg.data.batch_size, sampler=sampler, shuffle=False,
                      num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
                      generator=torch.Generator().manual_seed(0))  # keeps the global RNG as is


def level_counts(model, requested: list[int]) -> list[int | None]:
    """None = every level; plus the requested RVQ level counts for an RD sweep."""
    levels = model.quantizer.num_levels
    bad = [n for n in requested if not 1 <= n <= levels]
    if bad:
        from vqae.errors import ConfigError

        raise ConfigError(f"train.eval_levels {bad} outside 1..{levels} quantizer levels")
    return [None] + sorted(n for n in set(requested) if n != levels)


@torch.no_grad()
def evaluate(model, loader: DataLoader, normalizer: Normalizer, bands: list[str],
             device: torch.device, levels: list[int | None] = (None,), max_batches: int = 0,
             autocast=contextlib.nullcontext) -> dict[str, float]:
    """Metrics of `model` on `loader`; keys `psnr`, ... for all levels, `L<n>/psnr`, ... per n."""
    was_training = model.training
    model.eval()
    K = model.quantizer.codebook_size
    accs = {n: MetricAccumulator(bands, K) for n in levels}
    losses = torch.zeros(2, dtype=torch.float64, device=device)  # [sum mse, batches]
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        x = batch["image"].to(device, non_blocking=True)  # (B, C, H, W) normalized
        x_dn = normalizer.denormalize(x)
        for n, acc in accs.items():
            with autocast():
                out = model(x, n_q=n)
            recon = out.recon.float()
            acc.update(x_dn, normalizer.denormalize(recon), out.indices)
            if n is None:
                losses += torch.stack([torch.mean((recon - x) ** 2).double(),
                                       torch.ones((), dtype=torch.float64, device=device)])
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(losses)
    metrics = {"loss/mse": float(losses[0] / losses[1].clamp(min=1))}
    for n, acc in accs.items():
        acc.reduce()
        prefix = "" if n is None else f"L{n}/"
        metrics.update({prefix + k: v for k, v in acc.compute().items()})
    model.train(was_training)
    return metrics


def load_for_eval(ckpt_path: str, device: torch.device):
    """(model, config, normalizer) rebuilt from the config and stats saved in a checkpoint."""
    from vqae.checkpoint import load_checkpoint
    from vqae.errors import DataError

    path = Path(ckpt_path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    try:
        state = load_checkpoint(path, map_location=device)
    except Exception as err:  # torch raises many kinds for a torn file; report them all alike
        raise DataError(f"cannot load checkpoint {path}: {err}") from err
    cfg = from_dict(state["config"])
    model = build_model(cfg).to(device)
    model.load_state_dict(state["model"])
    normalizer = Normalizer.from_dict(state["normalization"], list(state["normalization"]),
                                      f"checkpoint {path}")
    return model, cfg, normalizer


def run_evaluate(ckpt: str, data: str | None, split: str, out: str | None,
                 device_name: str = "auto", levels: list[int] | None = None) -> dict:
    from vqae.distributed import resolve_device
    from vqae.tracking import format_table

    env = DistEnv()
    device = resolve_device(device_name, env)
    model, cfg, normalizer = load_for_eval(ckpt, device)
    if data:
        cfg.data.path = data
    ds = open_dataset(cfg.data, split, normalize=False)
    ds.normalizer = normalizer  # the statistics the model was trained with
    metrics = evaluate(model, eval_loader(ds, cfg, env, device), normalizer, ds.bands, device,
                       level_counts(model, levels or cfg.train.eval_levels))
    metrics["patches"] = len(ds)
    print(format_table(metrics, title=f"{split} ({len(ds)} patches) - {ckpt}"))
    if out:
        Path(out).write_text(json.dumps(metrics, indent=2))
    return metrics
