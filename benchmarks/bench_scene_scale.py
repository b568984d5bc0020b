"""Peak memory and time per pixel of `vqae compress` / `vqae decompress` on scenes of two sizes.

    python benchmarks/scene_data.py WORK --mosaic 10980
    python benchmarks/bench_scene_scale.py --ckpt CKPT WORK/s1920 WORK/s10980 [--out WORK]

Each command runs as its own process (its peak resident memory from wait4, the kernel's
count); the table gives seconds, microseconds per 10 m pixel, the ratio to the first scene's,
and the peak memory. It also checks that the decoded rasters carry the input's CRS, transform
and nodata and every band's native size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import rasterio
from tabulate import tabulate


def measured(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def georef_kept(scene: Path, decoded: Path) -> bool:
    for src in sorted(scene.glob("*_B*.tif")):
        band = src.stem.split("_")[-1]
        out = next(decoded.glob(f"*_{band}.tif"))
        with rasterio.open(src) as a, rasterio.open(out) as b:
            if (a.crs, a.transform, a.nodata, a.shape) != (b.crs, b.transform, b.nodata,
                                                           b.shape):
                return False
    return True


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenes", type=Path, nargs="+")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", type=Path, default=Path("scene-scale"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, first = [], {}
    for scene in args.scenes:
        with rasterio.open(next(scene.glob("*_B02.tif"))) as d:
            pixels = d.width * d.height
        vqz, dec = args.out / f"{scene.name}.vqz", args.out / f"{scene.name}-decoded"
        steps = {"compress": ["vqae", "compress", args.ckpt, str(scene), "-o", str(vqz),
                              "--overwrite", "--no-progress", "--device", "cpu"],
                 "decompress": ["vqae", "decompress", str(vqz), "-o", str(dec), "--ckpt",
                                args.ckpt, "--overwrite", "--no-progress", "--device", "cpu"]}
        for what, cmd in steps.items():
            seconds, mib = measured(cmd)
            per = 1e6 * seconds / pixels
            first.setdefault(what, per)
            rows.append({"scene": scene.name, "pixels": pixels, "step": what,
                         "seconds": round(seconds, 1), "us_per_pixel": round(per, 3),
                         "ratio": round(per / first[what], 3), "peak_mib": round(mib),
                         "bpppb": round(8 * vqz.stat().st_size / pixels / 12, 4)})
            print(json.dumps(rows[-1]), flush=True)
        rows[-1]["georef_kept"] = georef_kept(scene, dec)
    print(tabulate(rows, headers="keys"))
    (args.out / "scale.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
