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
    for device in ("cuda", torch.device("cuda")):
        with pytest.raises(CaexError, match=r"^device 'cuda': CUDA is not available on this machine$"):
            resolve_device(device)
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


def test_checkpoints_keep_the_rng_state_of_any_accelerator(monkeypatch) -> None:
    """Only CUDA's state was saved, so a resumed run on MPS or XPU drew other dropout masks."""
    from types import SimpleNamespace

    from caex.training.checkpoint import Checkpoint, capture_rng, restore_rng

    restored = []
    fake = SimpleNamespace(is_initialized=lambda: True, get_rng_state=lambda: torch.tensor([7, 8], dtype=torch.uint8),
                           set_rng_state=restored.append)
    monkeypatch.setattr(torch, "xpu", fake)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device("xpu"))
    states = capture_rng()
    assert sorted(states) == ["torch_cpu", "torch_xpu"] and states["torch_xpu"].tolist() == [7, 8]
    tensors = {f"rng.0.{name}": state for name, state in states.items()}
    restore_rng(Checkpoint(iteration=1, meta={}, tensors=tensors), rank=0)
    assert [state.tolist() for state in restored] == [[7, 8]]
    fake.is_initialized = lambda: False  # never started: nothing to save, and reading must not start it
    assert sorted(capture_rng()) == ["torch_cpu"]
