"""Training (`vqae train`) and evaluation (`vqae evaluate`).

- `trainer`: the Trainer and its loop, `train(cfg)`
- `evaluate`: metrics over a split (the loop's validation and `vqae evaluate`)
- `augment`: dihedral transforms and contrast stretch of training batches
- `tracking`: wandb, metrics.jsonl and the console behind one interface
- `images`: the reconstruction panels the tracker logs
"""
