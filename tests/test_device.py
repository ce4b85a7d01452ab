"""Device selection, mixed precision and device synchronisation without assuming CUDA."""

from __future__ import annotations

import contextlib

import pytest
import torch

from caex.errors import CaexError
from caex.evaluation.timing import synchronize
from caex.utils.device import autocast_context, resolve_device


def test_a_torch_device_object_is_validated_like_a_name(monkeypatch) -> None:
    """torch.device("cuda") skipped every check and failed later in torch's 'Found no NVIDIA driver'."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for device in ("cuda", torch.device("cuda")):
        with pytest.raises(CaexError, match=r"^device 'cuda': CUDA is not available on this machine$"):
            resolve_device(device)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a GPU node's job may hide them: the message says so
    with pytest.raises(CaexError, match=r"^device 'cuda': CUDA is not available on this machine "
                                        r"\(CUDA_VISIBLE_DEVICES='' is set, which can hide its GPUs\)$"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # GPU 1 of the node is cuda:0 in the job
    with pytest.raises(CaexError, match=r"^device 'cuda:1': this machine has 1 CUDA device\(s\) "
                                        r"\(CUDA_VISIBLE_DEVICES='1' is set, which can hide its GPUs\)$"):
        resolve_device("cuda:1")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(CaexError, match=r"^device 'warp': not a device name"):
        resolve_device("warp")


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # torch.autocast("cuda") on this CPU machine
def test_autocast_falls_back_to_fp32_on_a_gpu_that_only_emulates_bf16(monkeypatch) -> None:
    """Pre-Ampere CUDA (T4, V100) runs bf16 slower than fp32."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert isinstance(autocast_context(torch.device("cuda")), contextlib.nullcontext)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    context = autocast_context(torch.device("cuda"))
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16
    assert isinstance(autocast_context(torch.device("cuda"), enabled=False), contextlib.nullcontext)
    assert isinstance(autocast_context(torch.device("cpu")), contextlib.nullcontext)  # inference stays fp32


@pytest.mark.parametrize("kind", ["cuda", "xpu"])
def test_synchronize_waits_on_the_devices_own_backend(monkeypatch, kind: str) -> None:
    """Timings on XPU measured kernel launches only: just CUDA and MPS were synchronised."""
    waited = []
    monkeypatch.setattr(getattr(torch, kind), "synchronize", lambda device=None: waited.append(device))
    synchronize(torch.device(kind, 0))
    assert waited == [torch.device(kind, 0)]
    synchronize(torch.device("cpu"))  # nothing to wait for
    assert len(waited) == 1


def test_checkpoints_keep_the_rng_state_of_the_training_device_of_any_kind(monkeypatch) -> None:
    """Only CUDA's state was saved, so a resumed run on MPS or XPU drew other dropout masks; and the current
    device's was read, not the training device's: on cuda:1 a resume replayed other dropout and noise."""
    from types import SimpleNamespace

    from caex.training.checkpoint import Checkpoint, capture_rng, restore_rng

    read, restored = [], []
    fake = SimpleNamespace(get_rng_state=lambda device: read.append(device) or torch.tensor([7, 8], dtype=torch.uint8),
                           set_rng_state=lambda state, device: restored.append((state.tolist(), device)))
    monkeypatch.setattr(torch, "xpu", fake)
    states = capture_rng(torch.device("xpu", 1))
    assert sorted(states) == ["torch_cpu", "torch_xpu"] and states["torch_xpu"].tolist() == [7, 8]
    assert read == [torch.device("xpu", 1)]
    tensors = {f"rng.0.{name}": state for name, state in states.items()}
    restore_rng(Checkpoint(iteration=1, meta={}, tensors=tensors), rank=0, device=torch.device("xpu", 1))
    assert restored == [([7, 8], torch.device("xpu", 1))]
    assert sorted(capture_rng(torch.device("cpu"))) == ["torch_cpu"]  # training on the CPU: its state alone


def test_auto_picks_whatever_accelerator_torch_names(monkeypatch) -> None:
    """"auto" looked for CUDA and MPS only: on an Intel GPU it trained on the CPU (and gloo under torchrun)."""
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device("xpu"))
    assert resolve_device("auto") == resolve_device(None) == torch.device("xpu")
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_weights_seed_the_training_devices_generator_of_any_kind(monkeypatch) -> None:
    """Only CUDA's and MPS's generators were seeded: dropout on XPU was neither seeded nor given back."""
    from types import SimpleNamespace

    from caex.utils.seed import seed_weights

    seeded = []
    monkeypatch.setattr(torch, "xpu", SimpleNamespace(manual_seed=seeded.append))
    seed_weights(5, torch.device("xpu"))
    seed_weights(6, torch.device("cpu"))  # the CPU's alone
    seed_weights(7, torch.device("meta"))  # no generator to seed
    assert seeded == [5] and torch.initial_seed() == 7
