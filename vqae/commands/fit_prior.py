"""`vqae fit-prior CKPT [--data PATH] [--split train] [-o OUT]`: fit the codec's prior.

Counts the model's code indices on a split, chooses each RVQ stage's context by held-out bits,
and writes the integer tables into the checkpoint (atomically), or into a new file with -o.
"""

from __future__ import annotations

from pathlib import Path

from vqae.commands.common import int_in
from vqae.config import DEVICES


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint written by `vqae train`")
    parser.add_argument("--data", help="data path; default: the one in the checkpoint's config")
    parser.add_argument("--split", default="train",
                        help="train (default), validation, test, or all (every patch)")
    parser.add_argument("-o", "--out", help="write the checkpoint here instead of in place")
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where the encoder runs (the tables are counted on the CPU)")
    parser.add_argument("--batch-size", type=int_in(1, 65536), default=16, help="patches per batch")
    parser.add_argument("--workers", type=int_in(0, 1024), default=0,
                        help="DataLoader worker processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    path = fit_checkpoint(args.checkpoint, args.out, args.data, args.split, args.device,
                          args.batch_size, args.workers, not args.no_progress)
    print(f"wrote the fitted prior into {path}")
    return 0


def fit_checkpoint(ckpt: str, out: str | None, data: str | None, split: str, device_name: str,
                   batch_size: int, workers: int, progress: bool = True) -> Path:
    """Fit the prior of a checkpoint's model on a split and write the checkpoint (atomically)."""
    from vqae.checkpoint.manager import fit_and_save, model_from_state, read_checkpoint
    from vqae.data.source import source_at
    from vqae.distributed import single_device
    from vqae.errors import DataError

    device = single_device(device_name)
    state = read_checkpoint(ckpt)  # read once: the file rewritten is the file fitted
    model, cfg = model_from_state(ckpt, state, device)
    if out is not None:
        check_checkpoint_out(Path(out), [ckpt, data])  # before the long part
    with source_at(cfg.data, data) as source:
        print(f"fitting the prior on {source.describe(split)}")
        ds = source.dataset(split)
        if len(ds) < 2:
            raise DataError(f"split '{split}' of {source.path} has {len(ds)} patch(es); fitting "
                            "a prior needs at least 2: pass --split all or more data")
        print(fit_and_save(model, ds, [Path(out or ckpt)], lambda: state, device, batch_size,
                           workers, progress))
    return Path(out or ckpt)


def check_checkpoint_out(out: Path, inputs: list) -> None:
    """-o: never an input nor a folder; an existing file only if it is a vqae checkpoint
    (replacing it is what -o asks), never a file of the user's."""
    from vqae.checkpoint.manager import read_checkpoint
    from vqae.errors import DataError
    from vqae.io.outputs import check_apart

    if out.is_dir():
        raise DataError(f"-o {out} is a folder; give the checkpoint file to write, e.g. "
                        f"{out / 'fitted.pt'}")
    check_apart(out, inputs)
    if out.exists() or out.is_symlink():
        try:
            read_checkpoint(out)
        except DataError as err:
            raise DataError(f"-o {out} exists and is not a vqae checkpoint; it is never "
                            "replaced: choose another -o") from err
