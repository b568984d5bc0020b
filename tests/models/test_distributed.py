"""Two CPU processes (gloo): codebooks stay identical across ranks while each sees other data, and
DDP needs no unused-parameter search under quantizer dropout."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from vqae.models import ResidualVQ, VectorQuantizer

STEPS = 4


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # identical initial codebooks, as a DDP broadcast would give
        # a high revive threshold forces re-seeding every step; dropout leaves some stages empty
        vq = VectorQuantizer(8, codebook_size=16, kmeans_init=True, revive_threshold=0.8)
        rvq = ResidualVQ(8, depth=3, dropout=True, codebook_size=16, revive_threshold=0.8)
        grad_vq = VectorQuantizer(8, codebook_size=16, ema=False, revive_threshold=0.8)
        torch.manual_seed(100 + rank)  # different data and dropout draws per rank
        indices = []
        for _ in range(STEPS):
            z = torch.randn(2, 8, 4, 4) * (1 + rank)
            indices.append(vq(z).indices)
            rvq(z)
            grad_vq(z)
        state = {f"vq.{k}": v for k, v in vq.state_dict().items()}
        state |= {f"rvq.{k}": v for k, v in rvq.state_dict().items()}
        state |= {f"grad_vq.{k}": v for k, v in grad_vq.state_dict().items()}
        torch.save({"state": state, "indices": torch.stack(indices)}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_codebooks_stay_identical_across_ranks(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert not torch.equal(ranks[0]["indices"], ranks[1]["indices"])  # the data really differed
    first, second = ranks[0]["state"], ranks[1]["state"]
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert not torch.equal(first["vq.embed"], torch.zeros_like(first["vq.embed"]))


class DropoutLoss(torch.nn.Module):
    """A gradient-learned RVQ with quantizer dropout, reduced to a loss for DDP."""

    def __init__(self):
        super().__init__()
        self.rvq = ResidualVQ(8, depth=3, dropout=True, codebook_size=16, ema=False,
                              kmeans_init=False)
        self.unused_last_stage = 0  # steps where every example skipped the last stage

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.rvq(z)
        self.unused_last_stage += int((out.indices[:, -1] == -1).all())
        return out.quantized.square().mean() + sum(out.losses.values())


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        # no find_unused_parameters: a stage all of a rank's examples skip still gets a (zero)
        # gradient, else DDP would fail at the next step
        model = DistributedDataParallel(DropoutLoss())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.manual_seed(100 + rank)
        for _ in range(2 * STEPS):
            model(torch.randn(2, 8, 2, 2)).backward()  # two examples: stage 3 is often nobody's
            opt.step()
            opt.zero_grad()
        torch.save({"state": model.module.state_dict(),
                    "unused": model.module.unused_last_stage}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_needs_no_unused_parameter_search_under_quantizer_dropout(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert sum(r["unused"] for r in ranks) > 0  # the case that needed the search did happen
    first, second = ranks[0]["state"], ranks[1]["state"]
    for key in first:
        assert torch.equal(first[key], second[key]), key
