"""`vqae evaluate CKPT [--data PATH] [--split test]`: metrics table and JSON of a checkpoint."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint written by `vqae train`")
    parser.add_argument("--data", help="data path; default: the one in the checkpoint's config")
    parser.add_argument("--split", default="test", help="train, validation or test")
    parser.add_argument("--out", help="write the metrics JSON here")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--levels", type=int, nargs="*", default=None,
                        help="extra RVQ level counts to evaluate (an RD sweep)")


def run(args) -> int:
    from vqae.evaluate import run_evaluate

    run_evaluate(args.checkpoint, args.data, args.split, args.out, args.device, args.levels)
    return 0
