"""Device selection and mixed precision without assuming CUDA."""

from __future__ import annotations

import contextlib
import functools
import os

import torch

from caex.errors import CaexError


def torchrun_rank() -> int | None:
    """This process's rank when ``torchrun`` started it as one of several (its ``WORLD_SIZE`` above 1), else
    ``None``: read from the environment, so it is known before any process group exists."""
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        return int(os.environ.get("RANK", "0"))
    except ValueError:  # not torchrun's numbers: caex train's init_distributed names them in one line
        return None


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks the machine's accelerator (CUDA, XPU, MPS, ... as torch names it), else the CPU;
    anything else (a ``torch.device`` too) is validated."""
    if name in (None, "auto"):
        accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        return torch.device(accelerator.type if accelerator is not None else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise CaexError(f"device {name!r}: not a device name ({exc})") from None
    name = str(device)
    if device.type == "cuda":
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")  # a job's GPUs, numbered from 0 whatever their index
        hint = "" if hidden is None else f" (CUDA_VISIBLE_DEVICES={hidden!r} is set, which can hide its GPUs)"
        if not torch.cuda.is_available():
            raise CaexError(f"device {name!r}: CUDA is not available on this machine{hint}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CaexError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s){hint}")
    elif device.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise CaexError(f"device {name!r}: MPS is not available on this machine")
    elif device.type != "cpu":
        is_available = getattr(getattr(torch, device.type, None), "is_available", None)
        if not callable(is_available) or not is_available():
            raise CaexError(f"device {name!r}: not available on this machine (use cpu, cuda or mps)")
    return device


def module_device(module: object) -> torch.device:
    """Where a model's weights live, so inputs can follow them (CPU for a parameter-free stand-in or a model
    that is not an ``nn.Module``)."""
    parameters = module.parameters() if isinstance(module, torch.nn.Module) else iter(())
    parameter = next(parameters, None)
    return parameter.device if parameter is not None else torch.device("cpu")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16/AMX units (recent Xeon, EPYC); elsewhere bf16 is emulated and slower."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def accelerator_has_bf16(device: torch.device) -> bool:
    """Whether an accelerator computes bf16 natively: CUDA before Ampere (T4, V100) only emulates it, slower
    than fp32; other backends are trusted to (they raise where they cannot)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    return True


def autocast_context(device: torch.device, enabled: bool = True, *, cpu_bf16: bool = False):
    """bf16 autocast on accelerators that compute it natively (fp32 elsewhere).

    On CPU it is a no-op unless ``cpu_bf16`` asks for it and the CPU has native
    bf16 units, where classifier training runs about twice as fast (CAE
    training, opt-in, with channels-last: about 1.35x). Inference leaves it
    off: its maps and codes stay in fp32 on every machine.
    """
    if autocast_dtype(device, enabled, cpu_bf16=cpu_bf16) == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def autocast_dtype(device: torch.device, enabled: bool = True, *, cpu_bf16: bool = False) -> torch.dtype:
    """The precision :func:`autocast_context` computes in with these arguments on this machine (recorded
    beside trained weights: the same seed in the other precision gives other weights)."""
    if not enabled:
        return torch.float32
    native = cpu_bf16 and cpu_has_native_bf16() if device.type == "cpu" else accelerator_has_bf16(device)
    return torch.bfloat16 if native else torch.float32
