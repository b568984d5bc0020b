"""`vqae fit-prior CKPT [--data PATH] [--split train] [-o OUT]`: fit the codec's prior.

Counts the model's code indices on a split, chooses each RVQ stage's context by held-out bits,
and writes the integer tables into the checkpoint (atomically), or into a new file with -o.
"""

from __future__ import annotations

from vqae.commands.common import int_in

DEVICES = ("auto", "cpu", "cuda")


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
    from vqae.codec.pipeline import fit_checkpoint

    path = fit_checkpoint(args.checkpoint, args.out, args.data, args.split, args.device,
                          args.batch_size, args.workers, not args.no_progress)
    print(f"wrote the fitted prior into {path}")
    return 0
