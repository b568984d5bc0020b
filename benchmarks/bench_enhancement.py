"""The enhancement layer against the classical near-lossless and lossless codecs, side by side.

    python benchmarks/bench_enhancement.py --ckpt CKPT --train TRAIN.lmdb --test TEST.lmdb \
        [--fit-patches 64] [--test-patches 80] [--errors 0 1 2 4 8 16 32] [--kinds mlp ...]

Fits one residual model per kind (`vqae fit-residual`'s code) on patches of TRAIN, codes the
patches of TEST at every max error with each, checks every decoded native pixel against the
bound, and prints bpppb (bits / (120 x 120 x 12) per patch) beside JPEG-LS, LERC, JPEG XL
lossless and JPEG 2000 lossless (imagecodecs) on the same patches, with patches/s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from tabulate import tabulate

from vqae.codec.codec import Codec
from vqae.codec.residual_fit import FitOptions, fit_residual
from vqae.data.source import source_at
from vqae.rd.lossless_anchors import CODECS, anchor_table, decode, encode


def natives(codec, path: str, count: int) -> list[dict]:
    with source_at(codec.config.data, path) as source:
        ds = source.dataset("all")
        step = max(1, len(ds) // count)
        return [ds.load_raw(ds.names[i], list(codec.bands)) for i in range(0, len(ds), step)][:count]


def measure(codec, patches: list[dict], e: int, depth: int | None) -> dict:
    bits, worst, start = 0, 0, time.perf_counter()
    files = [codec.compress(p, depth=depth, max_error=e) for p in patches]
    mid = time.perf_counter()
    for p, data in zip(patches, files):
        out = codec.decompress(data)
        worst = max(worst, max(int(np.abs(out[b].astype(np.int64) - p[b]).max()) for b in p))
        bits += 8 * len(data)
    end = time.perf_counter()
    assert worst <= e, (e, worst)
    grid = 120 * 120 * len(codec.bands) * len(patches)
    return {"bpppb": bits / grid, "max_abs_error": worst,
            "compress patches/s": len(patches) / (mid - start),
            "decompress patches/s": len(patches) / (end - mid)}


def anchor_speed(name: str, patches: list[dict]) -> dict:
    """Lossless patches/s of a classical codec, every band of every patch."""
    start = time.perf_counter()
    streams = [[encode(name, np.ascontiguousarray(a, np.uint16), 0) for a in p.values()]
               for p in patches]
    mid = time.perf_counter()
    for bands in streams:
        for data in bands:
            decode(name, data)
    end = time.perf_counter()
    return {"compress patches/s": len(patches) / (mid - start),
            "decompress patches/s": len(patches) / (end - mid)}


def save(ckpt: str, out: str, model) -> None:
    from vqae.checkpoint.manager import read_checkpoint, save_checkpoint

    state = read_checkpoint(ckpt)
    state["residual"] = model.state()
    save_checkpoint(out, state)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--fit-patches", type=int, default=64)
    ap.add_argument("--test-patches", type=int, default=80)
    ap.add_argument("--errors", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16, 32])
    ap.add_argument("--kinds", nargs="+", default=["mlp", "linear", "static"],
                    help="residual models to fit, or saved: the checkpoint's")
    ap.add_argument("--no-anchors", action="store_true")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--depths", type=int, nargs="+", default=[0], help="base depths (0: all)")
    ap.add_argument("--save", help="write the checkpoint with the first kind's model here")
    args = ap.parse_args()
    codec = Codec.from_checkpoint(args.ckpt, "cpu")
    train = natives(codec, args.train, args.fit_patches) if set(args.kinds) - {"saved"} else []
    test = natives(codec, args.test, args.test_patches)
    rows = []
    for kind in args.kinds:
        start = time.perf_counter()
        if kind != "saved":  # "saved": the checkpoint's own residual model
            codec.residual = fit_residual(codec, train, FitOptions(kind=kind, steps=args.steps),
                                          log=None)
            print(f"fitted {kind} on {len(train)} patches in {time.perf_counter() - start:.0f} s")
        if args.save and kind == args.kinds[0]:
            save(args.ckpt, args.save, codec.residual)
        for depth in args.depths:
            name = f"vqae {kind}" + (f" depth {depth}" if depth else "")
            for e in args.errors:
                rows.append({"codec": name, "max_error": e,
                             **measure(codec, test, e, depth or None)})
                print(rows[-1], flush=True)
    start = time.perf_counter()
    for row in [] if args.no_anchors else anchor_table(test, args.errors):
        rows.append({"codec": row["codec"], "max_error": row["max_error"],
                     "bpppb": row["bpppb"], "max_abs_error": row["measured_max_error"]})
    print(f"anchors in {time.perf_counter() - start:.0f} s")
    for codec_name in () if args.no_anchors else CODECS:  # lossless speed, the same patches, in this run
        rows.append({"codec": codec_name, "max_error": 0, **anchor_speed(codec_name, test)})
    print(tabulate(rows, headers="keys", tablefmt="github", floatfmt=".3f"))
    table = {}
    for r in (r for r in rows if "bpppb" in r):
        table.setdefault(r["codec"], {})[r["max_error"]] = r["bpppb"]
    print(tabulate([[c, *(f"{v.get(e, float('nan')):.3f}" for e in args.errors)]
                    for c, v in table.items()], headers=["codec", *map(str, args.errors)],
                   tablefmt="github"))


if __name__ == "__main__":
    main()
