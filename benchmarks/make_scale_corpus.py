"""A scale corpus: N patches made from the 480 real ones of s2-real-480.tar.gz (issue 19).

Copy i takes real patch i mod 480 and the next of its variants: one of the 8 dihedral maps
(rot90 k, then a flip) and a circular shift of rows and columns by multiples of 6 px, so the
20 m and 60 m grids stay aligned with the 10 m one (6 px at 10 m = 3 px at 20 m = 1 px at 60 m).
A variant whose bytes equal an earlier patch's is passed over, so no two patches are
byte-identical. Real pixels; only their number is synthetic: say so wherever figures from
it appear. Names look like BigEarthNet's in length: `<source patch>_s<source>_c<variant>`.

    python benchmarks/make_scale_corpus.py --n 10000 --format lmdb OUT
    python benchmarks/make_scale_corpus.py --n 1000 --format geotiff OUT

OUT must not exist. Write it in a temporary folder and delete it after: 100,000 patches are
about 16 GB as an LMDB. The free space is checked first, and a corpus that would not fit
(with 2 GB to spare) is refused before anything is written.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
from safetensors.numpy import save as st_save

from vqae.data.bands import S2_BANDS
from vqae.data.lmdb_writer import LmdbWriter

GRID = 6  # px at 10 m: one 60 m pixel
SIDE = 120
SHIFTS = SIDE // GRID  # 20 positions per axis
VARIANTS = 8 * SHIFTS * SHIFTS  # 3,200 distinct variants of each real patch
BYTES_PER_PATCH = 175_000  # safetensors value plus LMDB page overhead, measured on the 480
SPARE = 2 << 30


def default_archive() -> Path:
    shared = os.environ.get("VQAE_SHARED_DATA")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / "s2-real-480.tar.gz"


def load_sources(archive: Path) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The real patches of the archive, in path order: (patch name, {band: native array})."""
    found: dict[str, dict[str, np.ndarray]] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            name = Path(member.name)
            if not member.isfile() or name.suffix != ".tif":
                continue
            band = name.stem.rsplit("_", 1)[-1]
            if band in S2_BANDS:
                data = tar.extractfile(member).read()
                found.setdefault(str(name.parent), {})[band] = tifffile.imread(io.BytesIO(data))
    sources = [(Path(k).name, v) for k, v in sorted(found.items()) if len(v) == len(S2_BANDS)]
    if not sources:
        sys.exit(f"{archive} holds no complete 12-band S2 patch")
    return sources


def variant(bands: dict[str, np.ndarray], v: int) -> dict[str, np.ndarray]:
    """Variant v of a patch: dihedral map v % 8, then a shift of (v // 8) grid steps."""
    k, flip, (dy, dx) = v % 4, (v // 4) % 2, divmod(v // 8, SHIFTS)
    out = {}
    for band, a in bands.items():
        step = a.shape[0] * GRID // SIDE  # 6, 3 or 1 px at this band's resolution
        a = np.rot90(a, k)
        a = a[:, ::-1] if flip else a
        out[band] = np.ascontiguousarray(np.roll(a, (dy * step, dx * step), axis=(0, 1)))
    return out


def patches(sources, n: int) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """N unique patches: copy i is the next unused variant of source i mod len(sources)."""
    if n > len(sources) * VARIANTS:
        sys.exit(f"--n {n} is more than the {len(sources) * VARIANTS:,} distinct variants")
    seen: set[bytes] = set()
    nxt = [0] * len(sources)
    for i in range(n):
        s = i % len(sources)
        name, bands = sources[s]
        while True:
            v = nxt[s]
            nxt[s] += 1
            if v >= VARIANTS:
                sys.exit(f"source patch {name} has no unused variant left for copy {i}")
            out = variant(bands, v)
            digest = hashlib.blake2b(b"".join(out[b].tobytes() for b in S2_BANDS),
                                     digest_size=16).digest()
            if digest not in seen:
                seen.add(digest)
                break
        yield f"{name}_s{s:03d}_c{v:04d}", out


def check_space(out: Path, n: int) -> None:
    need = n * BYTES_PER_PATCH
    free = shutil.disk_usage(out.parent).free
    if need + SPARE > free:
        sys.exit(f"{n:,} patches need about {need / 1e9:.1f} GB and {out.parent} has "
                 f"{free / 1e9:.1f} GB free (2 GB kept spare); use a smaller --n or another disk")


def write_lmdb(items, out: Path) -> None:
    writer = LmdbWriter(out, batch=256, map_size=64 << 30)
    try:
        for name, bands in items:
            writer.put(name, st_save(bands))
    finally:
        writer.close()


def write_geotiff(items, out: Path) -> None:
    """BigEarthNet v1 layout, 1,000 patch folders per tile folder: <tile>/<patch>/<patch>_<band>.tif."""
    for i, (name, bands) in enumerate(items):
        folder = out / f"tile{i // 1000:04d}" / name
        folder.mkdir(parents=True)
        for band, a in bands.items():
            tifffile.imwrite(folder / f"{name}_{band}.tif", a)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--format", choices=("lmdb", "geotiff"), required=True)
    ap.add_argument("--archive", type=Path, default=default_archive())
    args = ap.parse_args(argv)
    if args.n < 1:
        sys.exit("--n must be at least 1")
    if os.path.lexists(args.out):
        sys.exit(f"{args.out} exists; give a new path")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    check_space(args.out, args.n)
    items = patches(load_sources(args.archive), args.n)
    try:
        (write_lmdb if args.format == "lmdb" else write_geotiff)(items, args.out)
    except BaseException:
        shutil.rmtree(args.out, ignore_errors=True)  # never a half corpus
        raise
    print(f"{args.n} patches -> {args.out}")


if __name__ == "__main__":
    main()
