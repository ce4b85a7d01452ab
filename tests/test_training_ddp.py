"""Two gloo processes on CPU train in lock-step: identical weights (and moving averages) on both ranks."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import types
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from caex.data import ImageSet
from caex.errors import CaexError, Interrupted, TrainingError
from caex.model import CAE, CAEConfig
from caex.training import TrainConfig, losses, train_cae
from caex.training import trainer as trainer_module
from caex.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from caex.training.distributed import backend_for, init_distributed, local_device, mean_over_ranks, shutdown


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train_as_rank(rank: int, world_size: int, port: int, folder: str, **train) -> CAE:
    """Join the gloo group as ``rank`` and train the tiny CAE on the same 16 images as every rank, into
    ``folder/run`` (rank 0 writes); ``train`` overrides the tiny training preset."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    data = ImageSet(torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 2)
    config = CAEConfig.preset("tiny", image_size=16, channels=1, num_classes=2)
    train_config = TrainConfig.preset("tiny", sample_every=100, tensorboard=False, device="cpu", **train)
    return train_cae(data, config, train_config, os.path.join(folder, "run"))


def _save_rank_weights(cae: CAE, folder: str, rank: int) -> None:
    save_file({k: v.contiguous() for k, v in cae.state_dict().items()}, os.path.join(folder, f"rank{rank}.safetensors"))


def _worker(rank: int, world_size: int, port: int, folder: str, ema: float, loss: dict[str, float]) -> None:
    cae = _train_as_rank(rank, world_size, port, folder, iters=3, ckpt_every=3, ema=ema, loss=loss)
    _save_rank_weights(cae, folder, rank)


@pytest.mark.slow
@pytest.mark.parametrize(("ema", "loss"), [(0.0, {}), (0.5, {}), (0.0, {"individual_adversarial": 1.0}),
                                         (0.0, {"code_classification": 1.0})])
def test_two_gloo_ranks_end_identical(tmp_path, ema: float, loss: dict[str, float]) -> None:
    """The individual critic goes through the discriminator's DDP forward and the code probe through the
    generator's, so their gradients are shared too."""
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), ema, loss), nprocs=2, join=True)
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    saved = CAE.load(tmp_path / "run").state_dict()  # written by rank 0 only: the average when ema is set
    assert saved.keys() == rank0.keys() and all(torch.equal(saved[k], rank0[k]) for k in rank0)
    torch.manual_seed(0)  # the trainer's weight init
    initial = CAE(CAEConfig.preset("tiny", image_size=16, channels=1, num_classes=2)).state_dict()
    assert not torch.equal(initial["decoder.mlp.net.0.weight"], rank0["decoder.mlp.net.0.weight"])  # it trained


def _run_two_ranks_that_must_stop_together(worker, folder: Path, timeout: float = 120.0) -> None:
    """Spawn ``worker(rank, 2, port, folder)`` on two ranks; a rank left waiting in a collective fails the test
    after ``timeout`` seconds instead of hanging it."""
    context = mp.start_processes(worker, args=(2, _free_port(), str(folder)), nprocs=2, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=5):
            assert time.monotonic() < deadline, "the ranks did not stop together"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


def _train_and_record(rank: int, world_size: int, port: int, folder: str, error: type[Exception],
                      **train) -> None:
    """Train as ``rank``; the ``error`` it ends with, if any, goes to ``folder/rank<N>.txt``."""
    try:
        _train_as_rank(rank, world_size, port, folder, **train)
    except error as exc:
        Path(folder, f"rank{rank}.txt").write_text(str(exc))


def _poisoned_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    """Rank 1 alone sees a NaN in eq. 5 at iteration 2; each rank records the TrainingError it ends with."""
    original, calls = losses.adversarial_generator_loss, []

    def poisoned(logits):
        calls.append(1)
        return original(logits) * (float("nan") if rank == 1 and len(calls) == 2 else 1.0)

    losses.adversarial_generator_loss = poisoned
    _train_and_record(rank, world_size, port, folder, TrainingError, iters=4)


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path) -> None:
    """Before, the rank with the NaN raised alone and the others waited in DDP's gradient all-reduce."""
    _run_two_ranks_that_must_stop_together(_poisoned_worker, tmp_path)
    for rank in (0, 1):
        message = (tmp_path / f"rank{rank}.txt").read_text()
        assert message.startswith("loss term 'adversarial' became non-finite") and "at iteration 2" in message
    assert "(on another rank)" in (tmp_path / "rank0.txt").read_text()
    assert "(nan)" in (tmp_path / "rank1.txt").read_text()


def _clocked_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    """Rank 0's clock runs 600 s per reading, so only rank 0 sees the 1,000 s time limit pass (at iteration 2)."""
    if rank == 0:
        readings = iter(range(600, 10**9, 600))
        trainer_module.time = types.SimpleNamespace(perf_counter=lambda: float(next(readings)))
    _save_rank_weights(_train_as_rank(rank, world_size, port, folder, iters=8, time_limit=1000.0), folder, rank)


@pytest.mark.slow
def test_rank_0_decides_the_time_limit_for_every_rank(tmp_path) -> None:
    """Both ranks leave the loop at rank 0's check (one broadcast per check): a rank that went on alone would
    wait forever in the gradient all-reduce."""
    _run_two_ranks_that_must_stop_together(_clocked_worker, tmp_path)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["iters"] == 2
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)


def _refused_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    """Train into a finished run's folder, which rank 0 alone checks; each rank records the error it ends with."""
    _train_and_record(rank, world_size, port, folder, CaexError, iters=2)


@pytest.mark.slow
def test_a_refusal_on_rank_0_ends_every_rank_with_one_message(tmp_path) -> None:
    """Rank 0 refused the folder before joining the process group; rank 1 waited to join until torchrun's
    SIGKILL, 30 s later. Now every rank joins first and ends with rank 0: the refusal once, the other quiet."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    _run_two_ranks_that_must_stop_together(_refused_worker, tmp_path, timeout=60)
    refusal = (tmp_path / "rank0.txt").read_text()
    assert "folder is not empty" in refusal
    assert (tmp_path / "rank1.txt").read_text() == f"rank 0 failed: {refusal}"  # OtherRankFailed: not printed


def _signalled_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    """Rank 1 alone gets SIGTERM during its second iteration; each rank records how it ends."""
    step = trainer_module.BBCFETrainer.step

    def signalled(trainer, iteration):
        if rank == 1 and iteration == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(trainer, iteration)

    trainer_module.BBCFETrainer.step = signalled
    _train_and_record(rank, world_size, port, folder, Interrupted, iters=50, log_every=1)


@pytest.mark.slow
def test_a_signal_to_any_rank_stops_every_rank_with_the_checkpoint(tmp_path) -> None:
    """Only rank 0's stop flag counted: a SIGTERM to rank 1 printed "stopping" and the run went on to the end."""
    _run_two_ranks_that_must_stop_together(_signalled_worker, tmp_path)
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "stopped by SIGTERM after iteration 2, checkpoint saved"
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE).iteration == 2


def _averaging_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    context = init_distributed("cpu")
    try:
        mean = mean_over_ranks(torch.tensor([float(rank), 10.0 * rank]), context)
        Path(folder, f"rank{rank}.txt").write_text(json.dumps(mean.tolist()))
    finally:
        shutdown(context)


@pytest.mark.slow
def test_mean_over_ranks_gives_every_rank_the_mean(tmp_path) -> None:
    """The log showed rank 0's own batch as if it were the step's (the gradients follow the mean of all)."""
    _run_two_ranks_that_must_stop_together(_averaging_worker, tmp_path, timeout=60)
    assert [json.loads((tmp_path / f"rank{rank}.txt").read_text()) for rank in (0, 1)] == [[0.5, 5.0]] * 2


def test_a_world_size_without_a_rank_is_a_one_line_error(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(TrainingError, match="WORLD_SIZE=2 but RANK is not set; start distributed runs with torchrun"):
        init_distributed("cpu")


def test_under_torchrun_a_cuda_device_is_the_ranks_own_gpu(monkeypatch) -> None:
    """The classifier and the trainer of rank r both go to cuda:LOCAL_RANK, not to GPU 0 (checked
    without a GPU: device resolution is stubbed to say CUDA is there)."""
    monkeypatch.setattr("caex.training.distributed.resolve_device", lambda name: torch.device(name))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert local_device("cuda") == torch.device("cuda")  # a plain run keeps what it was given
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_device("cuda") == torch.device("cuda", 3)
    assert local_device("cuda:0") == torch.device("cuda", 3)
    assert local_device("cpu") == torch.device("cpu")  # gloo ranks share the CPU
    assert local_device("xpu") == torch.device("xpu", 3)  # every accelerator, not only CUDA
    assert local_device("mps") == torch.device("mps")  # one per machine


def test_each_device_type_gets_its_own_collective_backend() -> None:
    """XPU ranks joined a gloo group: only CUDA got its own backend."""
    expected = {"cpu": "gloo", "cuda": "nccl", "xpu": "xccl", "mps": "gloo"}
    assert {kind: backend_for(torch.device(kind)) for kind in expected} == expected


def test_rank_flags_are_reduced_on_the_ranks_own_device(monkeypatch) -> None:
    """A flag tensor made on the CPU went to NCCL, which reduces GPU tensors only: every multi-GPU run failed its
    first check ("No backend type associated with device type cpu"). ``meta`` stands in for the GPU."""
    from caex.training import distributed

    reduced = []
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda tensor, op=None: reduced.append(tensor.device))
    context = distributed.DistContext(0, 2, torch.device("meta"))
    distributed.max_over_ranks(torch.tensor([1, 0]), context)
    distributed.mean_over_ranks(torch.tensor([0.5]), context)
    assert reduced == [torch.device("meta")] * 2


def _forced_but_refused_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    """Both ranks force a new run into a finished one's folder; rank 1 alone refuses the data."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    if rank == 1:
        def refuse(*args, **kwargs):
            raise TrainingError("rank 1 refuses the data")

        trainer_module._check_data = refuse
    data = ImageSet(torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 2)
    config = CAEConfig.preset("tiny", image_size=16, channels=1, num_classes=2)
    train_config = TrainConfig.preset("tiny", iters=2, tensorboard=False, device="cpu")
    try:
        train_cae(data, config, train_config, os.path.join(folder, "run"), force=True)
    except CaexError as exc:
        Path(folder, f"rank{rank}.txt").write_text(str(exc))


@pytest.mark.slow
def test_a_forced_run_refused_on_another_rank_keeps_the_previous_model(tmp_path) -> None:
    """Rank 0 cleared the previous run before the ranks agreed, so a refusal on rank 1 lost the old model."""
    (tmp_path / "run").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "run" / name).write_text("the previous model")
    _run_two_ranks_that_must_stop_together(_forced_but_refused_worker, tmp_path, timeout=60)
    assert (tmp_path / "rank1.txt").read_text() == "rank 1 refuses the data"
    assert (tmp_path / "rank0.txt").read_text() == "rank 1 failed: rank 1 refuses the data"
    assert (tmp_path / "run" / "config.json").read_text() == "the previous model"
