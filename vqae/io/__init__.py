"""The safety promises every command keeps (DESIGN.md, Safety), in one room.

- `outputs`: the output-folder policy of compress, decompress, encode and rd (`Output`: IN != OUT,
  `--overwrite` only of our own output, built beside and swapped in)
- `run_outputs`: the same policy for a training run folder (`--run.overwrite`, `--run.resume`)
- `atomic`: the one atomic writer (temp file + rename; `durable` adds fsync)
- `safe_yaml`: YAML without aliases, tags or unbounded size
- `limits`: regular files only, read within a size limit
- `shell`: the one quoting of values into generated scripts and printed commands
- `stops`: TERM/USR1/INT as a flag checked between steps, exit status 75

Imports no torch.
"""
