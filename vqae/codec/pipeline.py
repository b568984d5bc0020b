"""What `vqae fit-prior`, `vqae compress` and `vqae decompress` do, over whole datasets."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tabulate import tabulate
from torch.utils.data import DataLoader
from tqdm import tqdm

from vqae.codec import bitstream
from vqae.codec.api import Codec, Encoded, band_arrays
from vqae.codec.store import BitstreamSink, RicoLmdbSink, TiffSink, bitstream_source, read_manifest
from vqae.data.lmdb_store import is_lmdb
from vqae.data.source import ALL, DataSource, point_at
from vqae.distributed import single_device
from vqae.errors import DataError

log = logging.getLogger(__name__)


def load(ckpt: str, device: torch.device):
    """(model, config, codec) of a checkpoint."""
    from vqae.checkpoint import load_model

    model, cfg = load_model(ckpt, device)
    return model, cfg, Codec(model, str(ckpt))


def check_depth(depth: int | None, model) -> int:
    full = model.quantizer.depth
    if depth is None:
        return full
    if not 1 <= depth <= full:
        raise DataError(f"--depth {depth} is outside 1..{full}, the model's RVQ stages")
    return depth


def open_data(cfg, data: str | None):
    """A DataSource over `data` (else the checkpoint's own data) with the model's bands."""
    cfg.data = point_at(cfg.data, data)
    return DataSource(cfg.data)


# ---- fit-prior --------------------------------------------------------------------------

def fit_checkpoint(ckpt: str, out: str | None, data: str | None, split: str, device_name: str,
                   batch_size: int, workers: int, progress: bool = True) -> Path:
    """Fit the prior of a checkpoint's model on a split and write the checkpoint (atomically)."""
    from vqae.checkpoint import model_from_state, read_checkpoint, save_checkpoint
    from vqae.codec.fit import fit_prior, report

    device = single_device(device_name)
    state = read_checkpoint(ckpt)  # read once: the file rewritten is the file fitted
    model, cfg = model_from_state(ckpt, state, device)
    with open_data(cfg, data) as source:
        print(f"fitting the prior on {source.describe(split)}")
        ds = source.dataset(split)
        if len(ds) < 2:
            raise DataError(f"split '{split}' of {source.path} has {len(ds)} patch(es); fitting "
                            "a prior needs at least 2: pass --split all or more data")
        fits = fit_prior(model, ds, device, batch_size, workers, progress)
    _, h, w = model.latent_shape()
    print(report(fits, model.quantizer.codebook_size, h * w, model.image_size ** 2))
    state["model"] = {k: v.cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(out or ckpt, state)


def fit_after_training(model, train_ds, ckpts, state_fn, step: int, cfg,
                       device: torch.device) -> None:
    """Rank 0 at the end of `vqae train`: fit the prior on the train split and rewrite the final
    checkpoint; best.pt too (refitted on its own weights when it is from an earlier step)."""
    from vqae.checkpoint import model_from_state, read_checkpoint, save_checkpoint
    from vqae.codec.fit import fit_prior, report

    if len(train_ds) < 2:
        log.warning("train split has %d patch(es): no prior fitted", len(train_ds))
        return
    args = (train_ds, device, cfg.data.batch_size, cfg.data.num_workers, False)
    fits = fit_prior(model, *args)
    _, h, w = model.latent_shape()
    log.info("prior fitted on %d train patches:\n%s", len(train_ds),
             report(fits, model.quantizer.codebook_size, h * w, model.image_size ** 2))
    state = state_fn()
    save_checkpoint(ckpts.path_for(step), state)
    best = ckpts.best()
    if best is None or not ckpts.best_path.is_file():
        return
    if best["step"] == step:
        save_checkpoint(ckpts.best_path, state)
        return
    best_state = read_checkpoint(ckpts.best_path)
    best_model, _ = model_from_state(ckpts.best_path, best_state, device)
    fit_prior(best_model, *args)
    best_state["model"] = {k: v.cpu() for k, v in best_model.state_dict().items()}
    save_checkpoint(ckpts.best_path, best_state)


# ---- compress ---------------------------------------------------------------------------

@dataclass
class Totals:
    patches: int = 0
    bytes: int = 0
    header_bytes: int = 0
    ideal_bits: float = 0.0
    seconds: float = 0.0

    def add(self, enc: Encoded) -> None:
        self.patches += 1
        self.bytes += len(enc.data)
        self.header_bytes += enc.header_bytes
        self.ideal_bits += enc.ideal_bits

    def rates(self, pixels: int, bpp_index: float) -> dict[str, float]:
        n = max(self.patches, 1) * pixels
        return {"bpp_coded": 8 * self.bytes / n, "bpp_entropy": self.ideal_bits / n,
                "bpp_index": bpp_index}


def compress(ckpt: str, data: str, out: str, depth: int | None = None, device_name: str = "auto",
             lmdb: bool = False, split: str | None = ALL, batch_size: int = 16, workers: int = 0,
             overwrite: bool = False, progress: bool = True, band_filter: str = "gain") -> dict:
    """Compress every patch of `data` (of `split`) into OUT; returns the summary figures.
    `band_filter`: the kind of band filter fitted and stored with each patch (bandfilter.py)."""
    device = single_device(device_name)
    model, cfg, codec = load(ckpt, device)
    codec.require_fitted()
    depth = check_depth(depth, model)
    out_path, totals = Path(out), Totals()
    with open_data(cfg, data) as source:
        print(f"compressing {source.describe(split)}")
        ds = source.dataset(split)
        sink = BitstreamSink(out_path, lmdb or out_path.suffix == ".lmdb", overwrite)
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
        start = time.perf_counter()
        for batch in tqdm(loader, desc="compress", unit="batch", disable=not progress):
            x = batch["image"].to(device)
            indices, centres = codec.encode_images(x, depth)
            fitted = codec.fit_filter(band_filter, x, indices, centres, device)  # (B, n)
            for name, grid, side, codes in zip(batch["name"], indices, centres, fitted):
                enc = codec.encode_indices(grid, side, band_filter, codes)  # (depth, h, w)
                sink.write(name, enc.data)
                totals.add(enc)
        totals.seconds = time.perf_counter() - start
    sink.close(manifest(ckpt, codec, depth, totals.patches) | {"band_filter": band_filter})
    return summarize(totals, model, depth, codec.side_bits(band_filter))


def manifest(ckpt: str, codec: Codec, depth: int, patches: int) -> dict:
    return {"format": "vqz", "version": bitstream.VERSION,
            "checkpoint": str(Path(ckpt).absolute()), "fingerprint": codec.fingerprint.hex(),
            "depth": depth, "bands": list(codec.bands), "patches": patches}


def summarize(totals: Totals, model, depth: int, side_bits: int) -> dict:
    _, h, w = model.latent_shape()
    from vqae.metrics import bpp_index

    pixels = model.image_size ** 2
    fixed = bpp_index(h * w, depth, model.quantizer.codebook_size, *(model.image_size,) * 2)
    figures = {"patches": totals.patches, "bytes": totals.bytes,
               **totals.rates(pixels, fixed),
               **({"bpp_side": side_bits / pixels} if side_bits else {}),
               "header_bytes/patch": totals.header_bytes / max(totals.patches, 1),
               "patches/s": totals.patches / max(totals.seconds, 1e-9)}
    rows = [(k, f"{v:,}" if isinstance(v, int) else f"{v:.4f}") for k, v in figures.items()]
    print(tabulate(rows, tablefmt="simple", disable_numparse=True))
    return figures


# ---- decompress -------------------------------------------------------------------------

def model_for(path: Path, ckpt: str | None) -> str:
    if ckpt:
        return ckpt
    found = read_manifest(path)
    if not found or not found.get("checkpoint"):
        raise DataError(f"{path} has no manifest.json naming its checkpoint; pass --ckpt CKPT "
                        "(the checkpoint that compressed it)")
    return found["checkpoint"]


def decompress(data: str, out: str, ckpt: str | None = None, depth: int | None = None,
               native: bool = False, device_name: str = "auto", overwrite: bool = False,
               progress: bool = True) -> dict:
    """Decode every bitstream of `data` into GeoTIFFs (or, from an LMDB, a rico-hdl LMDB)."""
    path = Path(data)
    names, records = bitstream_source(path)
    device = single_device(device_name)
    model, _, codec = load(model_for(path, ckpt), device)
    depth = None if depth is None else check_depth(depth, model)
    to_lmdb = is_lmdb(path)
    sink = RicoLmdbSink(Path(out), overwrite) if to_lmdb else TiffSink(Path(out), overwrite)
    native = native or to_lmdb  # rico-hdl stores every band at its native size
    cut = shallow = 0
    start = time.perf_counter()
    for name, blob in tqdm(records, total=len(names), desc="decompress", unit="patch",
                           disable=not progress):
        where = f"{path}[{name}]" if to_lmdb else str(
            path / f"{name}.vqz" if path.is_dir() else path)
        grid, header = codec.decode_file(blob, where, depth)  # (n, h, w)
        cut += len(grid) < min(depth or header.depth, header.depth)
        shallow += depth is not None and header.depth < depth
        dn = codec.decode_patch(grid, header, device)  # (C, H, W)
        sink.write(name, band_arrays(dn, codec.bands, native))
    sink.close()
    warn_short(cut, shallow, depth)
    seconds = time.perf_counter() - start
    print(f"decompressed {len(names)} patches into {out} ({len(names) / seconds:.1f} patches/s)")
    return {"patches": len(names), "cut": cut, "shallow": shallow, "seconds": seconds}


def warn_short(cut: int, shallow: int, depth: int | None) -> None:
    if cut:
        log.warning("%d file(s) were cut between chunks and were decoded at the complete stages "
                    "they hold", cut)
    if shallow:
        log.warning("%d file(s) were compressed with fewer than --depth %d stages and were "
                    "decoded at all their stages", shallow, depth)
