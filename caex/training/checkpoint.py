"""Crash-safe training checkpoints in ONE safetensors file.

Weights, both optimiser states, the lr schedulers, the iteration and every
rank's RNG states go into ``checkpoint.safetensors``: tensors as tensors, the
rest as JSON in the file's metadata. One file written through
:func:`caex.utils.io.atomic_write_bytes` (temp file, fsync, rename) means a kill
at any moment leaves either the previous checkpoint or the new one, never a
weights file from one iteration next to a state file from another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn
from torch.optim import Optimizer

from caex.errors import TrainingError
from caex.utils.io import atomic_write_bytes, newer_format

CHECKPOINT_FILE = "checkpoint.safetensors"
#: A run's training settings, written when it starts (before its first checkpoint).
TRAIN_CONFIG_FILE = "train_config.json"
FORMAT = "caex-checkpoint"
#: Raised when a checkpoint changes so that an older caex would misread it; a newer one is refused, not misread.
VERSION = 1
#: Header entries every checkpoint has; a file without one was not written by :func:`save_checkpoint`.
REQUIRED = ("optimizers", "schedulers")


@dataclass
class Checkpoint:
    """What a checkpoint holds, independent of the live objects it is restored into."""

    iteration: int
    meta: dict[str, Any] = field(default_factory=dict)  # JSON: configs, class names, ...
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    source: str = "checkpoint"  # the file it was read from, for messages that refuse a resume

    def module_state(self, prefix: str) -> dict[str, torch.Tensor]:
        start = f"{prefix}."
        return {name[len(start):]: t for name, t in self.tensors.items() if name.startswith(start)}


def flatten_optimizer(prefix: str, optimizer: Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state as (tensors keyed ``prefix.state.<param>.<name>``, JSON for everything else)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.state.{param_id}.{name}"] = value
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`: a dict ``Optimizer.load_state_dict`` accepts."""
    state: dict[int, dict[str, Any]] = {}
    start = f"{prefix}.state."
    for key, tensor in tensors.items():
        if key.startswith(start):
            param_id, name = key[len(start):].split(".", 1)
            state.setdefault(int(param_id), {})[name] = tensor
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: str | Path, *, iteration: int, modules: dict[str, nn.Module],
                    optimizers: dict[str, Optimizer], schedulers: dict[str, Any],
                    rng_states: list[dict[str, torch.Tensor]], meta: dict[str, Any]) -> Path:
    """Write everything needed to continue training bit-for-bit, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors.update({f"{name}.{key}": value for key, value in module.state_dict().items()})
    optimizer_meta = {}
    for name, optimizer in optimizers.items():
        flat, optimizer_meta[name] = flatten_optimizer(name, optimizer)
        tensors.update(flat)
    for rank, states in enumerate(rng_states):
        tensors.update({f"rng.{rank}.{name}": state for name, state in states.items()})
    header = {"format": FORMAT, "version": VERSION, "iteration": iteration, "optimizers": optimizer_meta,
              "schedulers": {name: scheduler.state_dict() for name, scheduler in schedulers.items()},
              "ranks": len(rng_states), **meta}
    payload = save({key: value.detach().cpu().contiguous() for key, value in tensors.items()},
                   metadata={"caex": json.dumps(header)})
    return atomic_write_bytes(path, payload)


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (no unpickling); ``required``: the header entries the
    caller's ``meta`` always holds, so that a file without one is refused naming it rather than failing later."""
    path = Path(path)
    header = read_checkpoint_header(path, required)
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open is no mapping
    except (SafetensorError, OSError) as exc:
        raise TrainingError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    return Checkpoint(iteration=header.pop("iteration"), meta=header, tensors=tensors, source=str(path))


def read_checkpoint_header(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON header of a checkpoint (its iteration and ``meta``), checked, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint to resume from")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = json.loads((handle.metadata() or {})["caex"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TrainingError(f"{path}: not a caex checkpoint")
    newer = newer_format(header.get("version", 1), VERSION, "checkpoint version")
    if newer:
        raise TrainingError(f"{path}: {newer}")
    iteration = header.get("iteration")
    if type(iteration) is not int or iteration < 0:
        raise TrainingError(f"{path}: its iteration ({iteration!r}) is not a count of iterations")
    missing = [key for key in REQUIRED + required if key not in header]
    if missing:
        raise TrainingError(f"{path}: lacks {', '.join(missing)}; not a checkpoint this caex can resume")
    return header


def restore_optimizer(checkpoint: Checkpoint, name: str, optimizer: Optimizer) -> None:
    optimizer.load_state_dict(unflatten_optimizer(name, checkpoint.tensors, checkpoint.meta["optimizers"][name]))


def _device_generators(device: torch.device) -> Any | None:
    """The torch module holding ``device``'s global generator (``torch.cuda``, ``torch.xpu``, ...), or ``None`` on
    the CPU (saved anyway) and where there is none."""
    module = None if device.type == "cpu" else getattr(torch, device.type, None)
    return module if hasattr(module, "get_rng_state") and hasattr(module, "set_rng_state") else None


def capture_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's global RNG states that its dropout draws from: the CPU's and the training ``device``'s (on
    ``cuda:1`` that one's, which :func:`caex.utils.seed.seed_weights` seeded, not the current device's)."""
    states = {"torch_cpu": torch.get_rng_state()}
    module = _device_generators(device)
    if module is not None:
        states[f"torch_{device.type}"] = module.get_rng_state(device)
    return states


def restore_rng(checkpoint: Checkpoint, rank: int, device: torch.device) -> None:
    """Put back ``rank``'s RNG states on the CPU and ``device``; a rank the checkpoint has none for (more processes
    now) keeps its own, and so does a device of another kind than the run saved."""
    cpu = checkpoint.tensors.get(f"rng.{rank}.torch_cpu")
    if cpu is None:
        return
    torch.set_rng_state(cpu)
    module = _device_generators(device)
    state = checkpoint.tensors.get(f"rng.{rank}.torch_{device.type}")
    if module is not None and state is not None:
        module.set_rng_state(state, device)
