"""`vqae fit-residual CKPT [--data PATH] [--split train] [-o OUT]`: the enhancement layer's model.

Fits the integer residual model that `vqae compress --max-error` and full-range rate control
code with (vqae.codec.residual_fit), on patches of a split, and writes it into the checkpoint
(atomically) under "residual", or into a new file with -o. The VQ model, its prior and its
fingerprint are unchanged, so lossy files compressed before still decode; enhanced files name
the residual model that coded them, so replacing one in place (`--replace`) leaves the files
it wrote undecodable with this checkpoint: fit a new one into a new file with -o instead.
"""

from __future__ import annotations

from pathlib import Path

from vqae.commands.common import int_in
from vqae.entropy.residual_model import KINDS


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint with a fitted prior (`vqae fit-prior`)")
    parser.add_argument("--data", help="data path; default: the one in the checkpoint's config")
    parser.add_argument("--split", default="train",
                        help="train (default), validation, test, or all (every patch)")
    parser.add_argument("-o", "--out", help="write the checkpoint here instead of in place")
    parser.add_argument("--patches", type=int_in(1, 1 << 20), default=64,
                        help="patches fitted on, spread evenly over the split (default 64)")
    parser.add_argument("--kind", choices=KINDS, default="mlp",
                        help="mlp (default): the integer network; linear: no hidden layer; "
                             "static: one scale per band and step (the ablation baselines)")
    parser.add_argument("--steps", type=int_in(1, 1 << 20), default=600,
                        help="optimizer steps (default 600)")
    parser.add_argument("--replace", action="store_true",
                        help="replace the checkpoint's residual model in place (files enhanced "
                             "with the old one then decode only with --lossy)")


def run(args) -> int:
    path = fit_checkpoint(args.checkpoint, args.out, args.data, args.split, args.patches,
                          args.kind, args.steps, args.replace)
    print(f"wrote the residual model into {path}")
    return 0


def fit_checkpoint(ckpt: str, out: str | None, data: str | None, split: str, patches: int,
                   kind: str, steps: int, replace: bool = False) -> Path:
    """Fit and write the residual model of a checkpoint (atomically); one in place only with
    `replace`."""
    from vqae.checkpoint.manager import read_checkpoint, save_checkpoint
    from vqae.codec.codec import Codec
    from vqae.codec.residual_fit import FitOptions, fit_residual
    from vqae.commands.fit_prior import check_checkpoint_out
    from vqae.data.source import source_at
    from vqae.errors import DataError

    state = read_checkpoint(ckpt)  # read once: the file rewritten is the file fitted
    codec = Codec.from_checkpoint(ckpt, "cpu")
    codec.check_s2_only()
    if "residual" in state and out is None and not replace:
        raise DataError(f"{ckpt} already has a residual model; files compressed with "
                        "--max-error name it and decode only with it: write the new one into "
                        f"another checkpoint with -o NEW.pt, or pass --replace")
    if out is not None:
        check_checkpoint_out(Path(out), [ckpt, data])  # before the long part
    with source_at(codec.config.data, data) as source:
        ds = source.dataset(split)
        if not len(ds):
            raise DataError(f"split '{split}' of {source.path} has no patch; pass --split all "
                            "or more data")
        pick = sorted({round(i * len(ds) / min(patches, len(ds))) for i in
                       range(min(patches, len(ds)))})
        print(f"fitting the residual model on {len(pick)} patches of "
              f"{source.describe(split)}")
        natives = [ds.load_raw(ds.names[i], list(codec.bands)) for i in pick]
    model = fit_residual(codec, natives, FitOptions(kind=kind, steps=steps))
    state["residual"] = model.state()
    save_checkpoint(Path(out or ckpt), state)
    return Path(out or ckpt)
