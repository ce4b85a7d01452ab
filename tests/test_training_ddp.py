"""Two gloo processes on CPU train in lock-step: identical weights (and moving averages) on both ranks."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from caex.data import ImageSet
from caex.model import CAE, CAEConfig
from caex.training import TrainConfig, train_cae


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, folder: str, ema: float) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    data = ImageSet(torch.rand(16, 1, 16, 16, generator=generator), torch.arange(16) % 2)
    config = CAEConfig.preset("tiny", image_size=16, channels=1, num_classes=2)
    train_config = TrainConfig.preset("tiny", iters=3, ckpt_every=3, sample_every=100, tensorboard=False,
                                      device="cpu", ema=ema)
    cae = train_cae(data, config, train_config, os.path.join(folder, "run"))
    save_file({k: v.contiguous() for k, v in cae.state_dict().items()}, os.path.join(folder, f"rank{rank}.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("ema", [0.0, 0.5])
def test_two_gloo_ranks_end_identical(tmp_path, ema: float) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), ema), nprocs=2, join=True)
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    saved = CAE.load(tmp_path / "run").state_dict()  # written by rank 0 only: the average when ema is set
    assert saved.keys() == rank0.keys() and all(torch.equal(saved[k], rank0[k]) for k in rank0)
    torch.manual_seed(0)  # the trainer's weight init
    initial = CAE(CAEConfig.preset("tiny", image_size=16, channels=1, num_classes=2)).state_dict()
    assert not torch.equal(initial["decoder.mlp.net.0.weight"], rank0["decoder.mlp.net.0.weight"])  # it trained
