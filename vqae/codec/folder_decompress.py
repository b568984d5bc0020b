"""`.vqz` files (a file, a folder or an LMDB of them) -> digital numbers: the pipeline of
`vqae decompress`.

`decompress(data, out, ...)` finds the checkpoint (`--ckpt`, else the manifest, a hint whose
fingerprint must match), decodes every file and writes uint16 GeoTIFFs per band (or, from an
LMDB, a rico-hdl LMDB), under the policy of vqae.io.outputs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class DecompressOptions:
    ckpt: str | None = None  # the checkpoint that compressed the files (default: the manifest's)
    depth: int | None = None  # RVQ stages to decode (None: all a file holds)
    native: bool = False  # each band at its native size (always, into an LMDB)
    lossy: bool = False  # skip enhancement layers: the RVQ stages alone
    device: str = "auto"  # where the decoder network runs; indices decode on the CPU
    overwrite: bool = False  # replace an earlier output of vqae decompress
    progress: bool = True


def decompress(data: str, out: str, opts: DecompressOptions | None = None) -> dict:
    """Decode every file of `data` into GeoTIFFs (or, from an LMDB, a rico-hdl LMDB)."""
    from vqae.codec.codec import Codec
    from vqae.codec.store import RicoLmdbSink, TiffSink, bitstream_source, guarded
    from vqae.data.lmdb_store import is_lmdb
    from vqae.errors import DataError

    opts, path = opts or DecompressOptions(), Path(data)
    if not path.exists():
        raise DataError(f"{path} does not exist; pass a .vqz file, a folder of them or an "
                        "LMDB written by `vqae compress`")
    named, found = model_for(path, opts.ckpt)
    codec = Codec.from_checkpoint(named, opts.device)
    names, records = bitstream_source(path, codec.check_header)
    check_manifest(path, found, codec, len(names))
    depth = None if opts.depth is None else codec.check_depth(opts.depth, "--depth")
    to_lmdb = is_lmdb(path)
    native = opts.native or to_lmdb  # rico-hdl stores every band at its native size
    fields = {"source": str(path.absolute()), "fingerprint": codec.fingerprint.hex(),
              "depth": depth, "native": native, "lossy": opts.lossy}
    sink = (RicoLmdbSink if to_lmdb else TiffSink)(Path(out), opts.overwrite, [data, named],
                                                    fields)
    run = DecompressRun(path, to_lmdb, codec, sink, depth, native, opts.progress, opts.lossy)
    start = time.perf_counter()
    with guarded(sink, fields, lambda: run.counts["patches"], len(names), "decompress") as stop:
        run.stop = stop
        run.decode_all(records, len(names))
        if not stop.requested:
            sink.close(fields | {"patches": run.counts["patches"]})
    warn_short(run.counts["cut"], run.counts["shallow"], depth)
    seconds = time.perf_counter() - start
    print(f"decompressed {len(names)} patches into {out} ({len(names) / seconds:.1f} patches/s)")
    return {**run.counts, "seconds": seconds}


@dataclass
class DecompressRun:
    """What decoding each file of one decompress run shares."""

    path: Path  # IN
    to_lmdb: bool
    codec: object  # vqae.codec.codec.Codec
    sink: object  # vqae.codec.store.TiffSink or RicoLmdbSink
    depth: int | None
    native: bool
    progress: bool = True
    lossy: bool = False
    stop: object = None  # vqae.io.stops.StopFlag, set once the loop runs under it
    counts: dict = field(default_factory=lambda: {"patches": 0, "cut": 0, "shallow": 0,
                                                  "enhanced": 0})

    def where(self, name: str) -> str:
        """A file's name in errors: IN[name] for an LMDB, the file itself otherwise."""
        if self.to_lmdb:
            return f"{self.path}[{name}]"
        return str(self.path / f"{name}.vqz" if self.path.is_dir() else self.path)

    def georef(self, header, name: str):
        """The file's georeferencing (vqae.codec.georef.Georef), None where it has none."""
        from vqae.codec.georef import Georef

        return None if header.georef is None else Georef.parse(header.georef, self.where(name))

    def decode_all(self, records, total: int) -> None:
        from tqdm import tqdm

        codec, depth, counts = self.codec, self.depth, self.counts
        for name, blob in tqdm(records, total=total, desc="decompress", unit="patch",
                               disable=not self.progress):
            parsed = codec.parse(blob, depth, self.where(name), layer=not self.lossy)
            stored = parsed.header.depth
            counts["cut"] += len(parsed.indices) < min(depth or stored, stored)
            counts["shallow"] += depth is not None and stored < depth
            if not self.lossy:  # a file cut before its layer cannot keep its bound
                codec.refuse_cut_layer(parsed, self.where(name))
            georef = self.georef(parsed.header, name)
            if parsed.layer is not None:  # native bands, within the header's max error
                self.sink.write(name, codec.enhanced_bands(parsed, self.where(name)), georef)
                counts["enhanced"] += 1
            else:
                self.sink.write(name, codec.band_arrays(codec.pixels(parsed), self.native),
                                georef)
            counts["patches"] += 1
            if self.stop.requested:
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
