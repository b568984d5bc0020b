"""`vqae decompress IN -o DIR [--depth n] [--native]`: `.vqz` files -> digital numbers.

IN is a .vqz file, a folder of them or an LMDB of them (the OUT of `vqae compress`, whose
manifest.json names the checkpoint; else pass --ckpt). Output: uint16 GeoTIFFs per band in the
BigEarthNet layout `DIR/<patch>/<patch>_B02.tif` at 120x120, or at each band's native size with
--native (so `vqae encode --bigearthnet-s2-root DIR` takes them); from an LMDB, a rico-hdl LMDB
(always native sizes). TERM/USR1/INT stop after the current patch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from vqae.commands.common import int_in
from vqae.config import DEVICES

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("input", metavar="IN", help=".vqz file, folder of them, or LMDB")
    parser.add_argument("-o", "--out", required=True, help="output folder (or LMDB)")
    parser.add_argument("--ckpt", help="the checkpoint that compressed IN (default: the one "
                        "named in IN's manifest.json)")
    parser.add_argument("--depth", type=int_in(1, 255),
                        help="decode the first n RVQ stages (default: all)")
    parser.add_argument("--native", action="store_true",
                        help="each band at its native size (area averaging of the 120x120 "
                        "decode: 60x60 for 20 m bands, 20x20 for 60 m bands)")
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where the decoder network runs (indices decode on the CPU)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT, an earlier output of vqae decompress (it stays intact "
                        "until the new one is complete)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    decompress(args.input, args.out, args.ckpt, args.depth, args.native, args.device,
               args.overwrite, not args.no_progress)
    return 0


def decompress(data: str, out: str, ckpt: str | None = None, depth: int | None = None,
               native: bool = False, device: str = "auto", overwrite: bool = False,
               progress: bool = True) -> dict:
    """Decode every file of `data` into GeoTIFFs (or, from an LMDB, a rico-hdl LMDB)."""
    from vqae.codec.codec import Codec
    from vqae.codec.store import RicoLmdbSink, TiffSink, bitstream_source, guarded
    from vqae.data.lmdb_store import is_lmdb
    from vqae.errors import DataError

    path = Path(data)
    if not path.exists():
        raise DataError(f"{path} does not exist; pass a .vqz file, a folder of them or an "
                        "LMDB written by `vqae compress`")
    named, found = model_for(path, ckpt)
    codec = Codec.from_checkpoint(named, device)
    names, records = bitstream_source(path, codec.check_header)
    check_manifest(path, found, codec, len(names))
    depth = None if depth is None else codec.check_depth(depth, "--depth")
    to_lmdb = is_lmdb(path)
    native = native or to_lmdb  # rico-hdl stores every band at its native size
    fields = {"source": str(path.absolute()), "fingerprint": codec.fingerprint.hex(),
              "depth": depth, "native": native}
    sink = (RicoLmdbSink if to_lmdb else TiffSink)(Path(out), overwrite, [data, named], fields)
    counts = {"patches": 0, "cut": 0, "shallow": 0}
    start = time.perf_counter()
    with guarded(sink, fields, lambda: counts["patches"], len(names), "decompress") as stop:
        decode_all(path, to_lmdb, records, len(names), codec, sink, depth, native, counts,
                   stop, progress)
        if not stop.requested:
            sink.close(fields | {"patches": counts["patches"]})
    warn_short(counts["cut"], counts["shallow"], depth)
    seconds = time.perf_counter() - start
    print(f"decompressed {len(names)} patches into {out} ({len(names) / seconds:.1f} patches/s)")
    return {**counts, "seconds": seconds}


def decode_all(path: Path, to_lmdb: bool, records, total: int, codec, sink, depth: int | None,
               native: bool, counts: dict, stop, progress: bool) -> None:
    from tqdm import tqdm

    for name, blob in tqdm(records, total=total, desc="decompress", unit="patch",
                           disable=not progress):
        where = f"{path}[{name}]" if to_lmdb else str(
            path / f"{name}.vqz" if path.is_dir() else path)
        parsed = codec.parse(blob, depth, where)
        stored = parsed.header.depth
        counts["cut"] += len(parsed.indices) < min(depth or stored, stored)
        counts["shallow"] += depth is not None and stored < depth
        sink.write(name, codec.band_arrays(codec.pixels(parsed), native))
        counts["patches"] += 1
        if stop.requested:
            return


def model_for(path: Path, ckpt: str | None) -> tuple[str, dict | None]:
    """(the checkpoint to decode `path` with, its manifest or None). The manifest is a hint:
    a relative checkpoint path in it resolves against its own folder."""
    from vqae.codec.store import read_manifest
    from vqae.errors import DataError

    found = read_manifest(path)
    if ckpt:
        return ckpt, found
    named = (found or {}).get("checkpoint")
    if not isinstance(named, str) or not named:
        raise DataError(f"{path} has no manifest.json naming its checkpoint; pass --ckpt CKPT "
                        "(the checkpoint that compressed it)")
    folder = path if path.is_dir() else path.parent
    if not (folder / named).exists():  # an absolute `named` stays as it is
        raise DataError(f"{folder / 'manifest.json'} names checkpoint {named}, which does not "
                        f"exist (moved or deleted?); pass --ckpt CKPT, the checkpoint that "
                        f"compressed {path}")
    return str(folder / named), found


def check_manifest(path: Path, found: dict | None, codec, count: int) -> None:
    """Refuse a manifest whose fingerprint is not the checkpoint's; warn about an output that
    an interrupted `vqae compress` left, or one whose completeness nothing records."""
    from vqae.data.lmdb_store import is_lmdb
    from vqae.errors import DataError

    fp = (found or {}).get("fingerprint")
    if isinstance(fp, str) and fp != codec.fingerprint.hex():
        raise DataError(f"{path}'s manifest.json gives model fingerprint {fp[:16]!r}, but "
                        f"{codec.source} has {codec.fingerprint.hex()}; pass --ckpt with the "
                        "checkpoint that compressed these files")
    if found is None:
        if is_lmdb(path) or path.is_dir():
            log.warning("%s has no manifest.json: nothing says whether it holds every patch "
                        "(an interrupted `vqae compress` leaves a part); decoding the %d found",
                        path, count)
    elif found.get("complete") is False:
        log.warning("%s is INCOMPLETE: an interrupted `vqae compress` wrote %d patch(es) and "
                    "did not finish; complete it with `vqae compress ... --resume`, then "
                    "decompress again", path, count)


def warn_short(cut: int, shallow: int, depth: int | None) -> None:
    if cut:
        log.warning("%d file(s) were cut between chunks and were decoded at the complete stages "
                    "they hold", cut)
    if shallow:
        log.warning("%d file(s) were compressed with fewer than --depth %d stages and were "
                    "decoded at all their stages", shallow, depth)
