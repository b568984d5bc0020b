"""`vqae evaluate CKPT [--data PATH] [--split test|all]`: metrics table and JSON of a checkpoint."""

from __future__ import annotations

from vqae.commands.common import add_threshold, int_in, threshold
from vqae.config import DEVICES


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint written by `vqae train`")
    parser.add_argument("--data", help="data path; default: the one in the checkpoint's config")
    parser.add_argument("--splits", help="split metadata for --data (metadata.parquet or a "
                        "folder of v1 CSVs); default: none, so splits come from a name hash")
    parser.add_argument("--split", help="train, validation, test, or all (every patch); "
                        "default: test")
    parser.add_argument("--out", help="write the metrics JSON to this file; an existing file is "
                        "replaced only when an earlier result of vqae evaluate, never an input")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--depths", type=int_in(1, 255), nargs="*", default=None,
                        help="RVQ depths to evaluate besides the full one (an RD sweep)")
    add_threshold(parser)


def run(args) -> int:
    from vqae.training.evaluate import run_evaluate

    run_evaluate(args.checkpoint, args.data, args.split, args.out, args.device, args.depths,
                 args.splits, **threshold(args))
    return 0
