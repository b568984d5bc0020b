"""`vqae convert-checkpoint CKPT|DIR [...] [-o OUT]`: make an older vqae's checkpoint load.

Checkpoints are safetensors files, read without any pickle. An older vqae wrote torch pickles
(torch.save); every command recognises one without unpickling it and stops with a hint to run
this. It rewrites such files as safetensors, in place (atomically, and only after the new file
is verified) or into OUT; a best.pt that is a hard link of a step checkpoint stays one. Even
here no code in the file runs: the pickle is read with torch's weights_only loader, numpy arrays
allowed beyond tensors and plain values, and only where the old format kept one. A file that
names any other Python object is refused, whatever its origin. Convert only checkpoints you
trust (your own runs): the result loads in every command, and converting changes how values are
stored, not whether the weights in it are what you expect.
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT",
                        help="a checkpoint, or a folder whose *.pt (and checkpoints/*.pt) to "
                        "convert, e.g. a run folder")
    parser.add_argument("-o", "--out", help="write the converted checkpoint here instead of in "
                        "place (one CKPT only)")


def run(args) -> int:
    from vqae.checkpoint.convert import convert

    for line in convert(args.checkpoints, args.out):
        print(line)
    return 0
