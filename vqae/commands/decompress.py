"""`vqae decompress IN -o DIR [--depth n] [--native] [--lossy]`: `.vqz` files -> digital numbers.

IN is a .vqz file, a folder of them or an LMDB of them (the OUT of `vqae compress`, whose
manifest.json names the checkpoint; else pass --ckpt). Output: uint16 GeoTIFFs per band in the
BigEarthNet layout `DIR/<patch>/<patch>_B02.tif` at 120x120, or at each band's native size with
--native (so `vqae encode --bigearthnet-s2-root DIR` takes them); from an LMDB, a rico-hdl LMDB
(always native sizes). A scene .vqz (`vqae compress CKPT SCENE -o scene.vqz`) decodes into DIR
as one GeoTIFF (COG) per band at its native resolution with the scene's CRS, geotransform and
nodata; --window x,y,w,h decodes a region alone (10 m pixels). TERM/USR1/INT stop after the current patch.
"""

from __future__ import annotations

from vqae.commands.common import int_in
from vqae.config import DEVICES


def add_arguments(parser) -> None:
    parser.add_argument("input", metavar="IN", help=".vqz file, folder of them, or LMDB")
    parser.add_argument("-o", "--out", required=True, help="output folder (or LMDB)")
    parser.add_argument("--ckpt", help="the checkpoint that compressed IN (default: the one "
                        "named in IN's manifest.json)")
    parser.add_argument("--depth", type=int_in(1, 255),
                        help="decode the first n RVQ stages (default: all)")
    parser.add_argument("--native", action="store_true",
                        help="each band at its native size (area averaging of the 120x120 "
                        "decode: 60x60 for 20 m bands, 20x20 for 60 m bands); a file with an "
                        "enhancement layer (--max-error) always decodes to native sizes")
    parser.add_argument("--lossy", action="store_true",
                        help="ignore enhancement layers: decode the RVQ stages alone")
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where the decoder network runs (indices decode on the CPU)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT, an earlier output of vqae decompress (it stays intact "
                        "until the new one is complete)")
    parser.add_argument("--window", type=window_arg, metavar="X,Y,W,H",
                        help="of a scene file: decode only this region (10 m pixels)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def window_arg(text: str) -> tuple[int, int, int, int]:
    import argparse

    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give X,Y,WIDTH,HEIGHT in 10 m pixels, "
                                         "e.g. 0,0,1200,1200") from None
    return x, y, w, h


def is_scene_file(path: str) -> bool:
    from pathlib import Path

    from vqae.scene.container import is_scene

    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return is_scene(f.read(8))


def run_scene(args) -> int:
    from vqae.codec.codec import Codec
    from vqae.errors import DataError
    from vqae.scene import decompress_scene

    if not args.ckpt:
        raise DataError(f"{args.input} is a scene file; pass --ckpt CKPT, the checkpoint that "
                        "compressed it")
    if args.native or args.lossy:
        raise DataError("a scene always decodes to native sizes, and has no enhancement "
                        "layer: drop --native / --lossy")
    codec = Codec.from_checkpoint(args.ckpt, args.device)
    paths = decompress_scene(codec, args.input, args.out, args.depth, args.window,
                             args.overwrite, not args.no_progress)
    print(f"wrote {len(paths)} GeoTIFFs to {args.out}")
    return 0


def run(args) -> int:
    from vqae.codec.folder_decompress import DecompressOptions, decompress

    if is_scene_file(args.input):
        return run_scene(args)
    if args.window is not None:
        from vqae.errors import DataError

        raise DataError("--window applies to a scene file (vqae compress ... -o scene.vqz)")

    decompress(args.input, args.out, DecompressOptions(
        ckpt=args.ckpt, depth=args.depth, native=args.native, device=args.device,
        overwrite=args.overwrite, progress=not args.no_progress, lossy=args.lossy))
    return 0
