"""Codec throughput and rates: entropy coding alone and end to end, bpp_coded vs bpp_entropy
and bpp_index, and the bits the conditional prior saves over a context-free one.

    python benchmarks/bench_codec.py --ckpt runs/x/checkpoints/best.pt --data PATCHES \
        [--split all] [--device cpu|cuda] [--threads 2] [--max-patches 64] [--repeats 3]

Without --ckpt, a k-means-initialised, untrained RVQ 8 x K 1024 (f = 8, the issue's GPU
architecture) is built on the data and its prior fitted there: its speeds are meaningful, its
rates are not. Throughputs are in memory (no file I/O), medians of `--repeats` passes;
"compress" = model.encode + the band filter's fit (a model.decode of the chosen indices, for
gain and mix) + entropy coding, "decompress" = entropy decoding + model.decode (one patch at a
time, as `vqae decompress`) + the band filter + rounding to uint16.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch
from tabulate import tabulate

from vqae.codec import bitstream
from vqae.codec.codec import Codec
from vqae.config import load_config
from vqae.data.source import DataSource
from vqae.entropy.fit import collect_counts, fit_tables
from vqae.entropy.prior import NONE, Prior
from vqae.metrics import bpp_index
from vqae.models import build_model

SYNTHETIC = ["model.widths=[64,128,256]", "quantizer.name=rvq", "quantizer.depth=8",
             "quantizer.codebook_size=1024", "quantizer.kmeans_iters=5"]


def load_patches(cfg, data: str, count: int, split: str = "all") -> tuple[torch.Tensor, list[str]]:
    """The first `count` patches of `split` of `data`, read with the model's bands."""
    data_cfg = dataclasses.replace(cfg.data, path=data, splits="", format="auto")
    with DataSource(data_cfg) as source:
        ds = source.dataset(split)
        items = [ds[i] for i in range(min(count, len(ds)))]
    return torch.stack([it["image"] for it in items]), [it["name"] for it in items]


def synthetic_model(data: str, count: int):
    cfg = load_config(None, SYNTHETIC)
    model = build_model(cfg)
    x, _ = load_patches(cfg, data, count)
    model.train()
    with torch.no_grad():
        model(x)  # k-means initialisation of every stage on these patches
    model.eval()
    return model, cfg


def median_rate(fn, patches: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return patches / statistics.median(times)


def compress_files(codec: Codec, x: torch.Tensor, device: torch.device, kind: str) -> list:
    """What `vqae compress --band-filter KIND` does in memory, 16 patches per batch."""
    files = []
    for start in range(0, len(x), 16):
        files += codec.compress_images(x[start : start + 16].to(device), None, kind)
    return files


def throughputs(codec: Codec, x: torch.Tensor, device: torch.device, repeats: int) -> dict:
    grids, patch_means = codec.analyse(x.to(device))  # (N, depth, h, w), (N, C or 0)
    files = {kind: [e.data for e in compress_files(codec, x, device, kind)]
             for kind in ("none", "gain")}
    n = len(x)

    def decompress(kind: str):
        for f in files[kind]:
            codec.decompress(f)

    out = {
        "entropy encode (patches/s)": median_rate(
            lambda: [codec.pack(g, c) for g, c in zip(grids, patch_means)], n, repeats),
        "entropy decode (patches/s)": median_rate(
            lambda: [codec.parse(f, source="bench").indices for f in files["none"]], n, repeats),
    }
    for kind in ("none", "gain", "mix"):  # the band filter costs the encoder a decoder pass
        out[f"compress end to end, band filter {kind} (patches/s)"] = median_rate(
            lambda kind=kind: compress_files(codec, x, device, kind), n, repeats)
    for kind in ("none", "gain"):
        out[f"decompress end to end, band filter {kind} (patches/s)"] = median_rate(
            lambda kind=kind: decompress(kind), n, repeats)
    return out


def rates(codec: Codec, x: torch.Tensor, device: torch.device) -> dict:
    model = codec.model
    encoded = [codec.pack(g, c) for g, c in zip(*codec.analyse(x.to(device)))]
    pixels = len(encoded) * model.image_size ** 2
    depth, h, w = model.latent_shape()
    coded = 8 * sum(len(e.data) for e in encoded) / pixels
    entropy = sum(e.ideal_bits for e in encoded) / pixels
    header = 8 * sum(e.header_bytes for e in encoded) / pixels
    payload = 8 * sum(len(p) for e in encoded
                      for p in bitstream.read(e.data, "bench").payloads) / pixels
    fixed = bpp_index(h * w, depth, model.quantizer.codebook_size, model.image_size,
                      model.image_size)
    return {"bpp_coded": coded, "bpp_entropy": entropy, "bpp_index": fixed,
            "header bpp": header,
            "payload bpp (no header, lengths, CRCs)": payload,
            "bpp_coded / bpp_entropy": coded / entropy,
            "payload bpp / bpp_entropy": payload / entropy,
            "bpp_coded / bpp_index": coded / fixed}


def ideal_bpp(tables, grids: np.ndarray, pixels: int) -> float:
    """Information content of index grids (N, depth, h, w) under prior tables, per pixel."""
    bits = 0.0
    for s in range(grids.shape[1]):
        rows = tables.row_ids(grids, s)  # (N, h, w)
        p = tables.probs[s][rows, grids[:, s]]  # (N, h, w)
        bits -= float(np.log2(p).sum())
    return bits / (len(grids) * pixels)


def prior_comparison(model, cfg, x: torch.Tensor, device: torch.device) -> dict:
    """bpp of the benchmark patches under priors fitted on the checkpoint's training split: the
    fitted choice of contexts, and the best prior without context."""
    with DataSource(cfg.data) as source:
        counts = collect_counts(model, source.dataset("train"), device, 16, 0, False)
    chosen = fit_tables(counts)[:3]
    counts.kinds = {s: [NONE] for s in counts.kinds}
    free = fit_tables(counts)[:3]
    grids = model.encode(x.to(device)).cpu().numpy()
    out = {}
    for name, (freqs, kinds, clusters) in (("conditional", chosen), ("context-free", free)):
        prior = Prior(*freqs.shape[::2])
        prior.set_tables(freqs, kinds, clusters)
        out[f"bpp under the {name} prior (fitted on train)"] = ideal_bpp(
            prior.tables(), grids, model.image_size ** 2)
    values = list(out.values())
    out["bits saved by the contexts"] = 1 - values[0] / values[1]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="a checkpoint with a fitted prior (default: synthetic)")
    parser.add_argument("--data", required=True, help="patches (GeoTIFF folder, LMDB, archive)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--split", default="all", help="all (default), train, validation, test")
    parser.add_argument("--max-patches", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.ckpt:
        from vqae.checkpoint.manager import load_model

        model, cfg = load_model(args.ckpt, device)
    else:
        model, cfg = synthetic_model(args.data, args.max_patches)
    x, _ = load_patches(cfg, args.data, args.max_patches, args.split)
    if not args.ckpt:
        counts = collect_counts(model, [{"image": p} for p in x], device, 16, 0, False)
        model.prior.set_tables(*fit_tables(counts)[:3])
    model.to(device)
    codec = Codec(model, args.ckpt or "synthetic")
    print(f"{len(x)} patches, {model.prior.describe()}, device {device}, "
          f"{args.threads} threads")
    figures = {**throughputs(codec, x, device, args.repeats), **rates(codec, x, device)}
    if args.ckpt:
        figures.update(prior_comparison(model, cfg, x, device))
    print(tabulate([(k, f"{v:.4f}") for k, v in figures.items()], tablefmt="simple"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
