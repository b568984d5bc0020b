"""Training (`vqae train`) and evaluation (`vqae evaluate`).

- `trainer`: the Trainer (set-up, one step, the loop in one screen) and `train(cfg)`; its other
  parts are small mixins beside it:
  - `resume`: the training state a checkpoint holds, the loader position, `--run.resume`
  - `run_folder`: what a run reads and writes, an earlier run's outputs, the end-of-run report
  - `hooks`: logging, evaluation, reconstruction panels, checkpoints and stops on the schedule
  - `prior_fit`: the prior fitted into the final checkpoints; a finished run left as it is
- `schedule`: what runs when, the learning rate, optimizer, mixed precision, the progress bar
- `evaluate`: metrics over a split (the loop's validation and `vqae evaluate`)
- `augment`: dihedral transforms and contrast stretch of training batches
- `tracking`: wandb, metrics.jsonl and the console behind one interface
- `images`: the reconstruction panels the tracker logs
"""
