"""Evaluation over a whole split: distortion in digital numbers, rates and codebook health."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.utils.data import DistributedSampler

from vqae.config import Config, check_depth
from vqae.data.device_input import DeviceInput, Prefetcher
from vqae.data.loader import Loader
from vqae.data.readers import PatchDataset
from vqae.data.source import ALL, DataSource, point_at
from vqae.data.splits import canonical_split
from vqae.distributed import DistEnv
from vqae.errors import DataError
from vqae.io.atomic import write_json
from vqae.io.limits import read_small
from vqae.io.outputs import check_out_file
from vqae.io.stops import Stopped
from vqae.metrics import PSNR_THRESHOLD, MetricAccumulator
from vqae.models import Autoencoder

log = logging.getLogger(__name__)
# The mark of a metrics JSON written by `vqae evaluate --out`: only such a file is replaced.
RESULT_MARKER, RESULT_WRITER = "written_by", "vqae evaluate"
RESULT_MAX_BYTES = 16 << 20  # ours are a few KB


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
    for n in requested:
        check_depth(n, depth, "--depths entry")
    return [None] + sorted(n for n in set(requested) if n != depth)


@torch.no_grad()
def evaluate(model: Autoencoder, loader: Iterable[dict], inputs: DeviceInput,
             depths: list[int | None] = (None,), max_batches: int = 0,
             autocast=contextlib.nullcontext,
             stop: Callable[[], bool] | None = None,
             psnr_threshold: float = PSNR_THRESHOLD) -> dict[str, float]:
    """Metrics of `model` on `loader`, its batches brought to the device by `inputs`; keys
    `psnr`, `psnr_pooled`, `psnr_p10`, `psnr_min`, `patches_below` (under `psnr_threshold`),
    ... at full depth, `depth<n>/psnr`, ... per n. `stop` is asked before each batch (under
    DDP it must answer alike on every rank: every rank has as many batches); when it says yes,
    Stopped is raised."""
    was_training = model.training
    model.eval()
    try:
        return _evaluate(model, loader, inputs, depths, max_batches, autocast, stop,
                         psnr_threshold)
    finally:
        model.train(was_training)


def _evaluate(model, loader, inputs, depths, max_batches, autocast, stop,
              psnr_threshold) -> dict[str, float]:
    device = inputs.device
    offsets = model.normalize.offsets()
    accs = {n: MetricAccumulator(model.bands, model.quantizer.codebook_size, offsets,
                                 model.side_bits(), psnr_threshold)
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
            acc.update(x, model.to_dn(recon, out.patch_means), out.indices)
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


def _earlier_result(path: Path) -> bool:
    """Whether `path` is a metrics JSON that `vqae evaluate` wrote (it carries the marker)."""
    try:
        found = json.loads(read_small(path, RESULT_MAX_BYTES, "--out file").decode("utf-8"))
    except (DataError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(found, dict) and found.get(RESULT_MARKER) == RESULT_WRITER


def check_out(out: str, inputs: list[str | os.PathLike]) -> None:
    """--out: a new file, or an earlier `vqae evaluate` result (the policy of check_out_file)."""
    check_out_file(out, inputs, _earlier_result,
                   f'an earlier `vqae evaluate` result (a JSON object with "{RESULT_MARKER}": '
                   f'"{RESULT_WRITER}")')


def run_evaluate(ckpt: str, data: str | None, split: str | None, out: str | None,
                 device_name: str = "auto", depths: list[int] | None = None,
                 splits: str | None = None, psnr_threshold: float = PSNR_THRESHOLD) -> dict:
    """Metrics of checkpoint `ckpt` on `split` of the data; with `out`, also written there as
    JSON (atomically; an existing `out` only when an earlier result of this command)."""
    from vqae.checkpoint.manager import load_model
    from vqae.data.sample import sample_dir
    from vqae.distributed import single_device
    from vqae.training.tracking import format_table

    if out:
        check_out(out, [ckpt, data, splits])  # before a long evaluation
    env = DistEnv(device=str(single_device(device_name)))
    model, cfg = load_model(ckpt, env.device)
    cfg.data = point_at(cfg.data, data, splits)
    inputs = [ckpt, cfg.data.path or sample_dir(), cfg.data.splits]
    if out:
        check_out(out, inputs)
    device_input = DeviceInput.for_config(cfg.data, env.torch_device)
    with DataSource(cfg.data) as source:
        split = choose_split(split, source)
        description = source.describe(split)
        print(f"evaluating {description}")
        ds = source.dataset(split, native=device_input.native)
        metrics = evaluate(model, eval_loader(ds, cfg, env), device_input,
                           eval_depths(model, depths or cfg.train.eval_depths),
                           psnr_threshold=psnr_threshold)
    metrics = {"split": split if split == ALL else canonical_split(split), "patches": len(ds),
               "psnr_threshold": psnr_threshold, **metrics}
    print(format_table(metrics, title=f"{description} - {ckpt}"))
    if out:
        check_out(out, inputs)  # again: the evaluation may have taken hours
        write_json(out, {RESULT_MARKER: RESULT_WRITER, **metrics})
    return metrics
