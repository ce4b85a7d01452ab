"""Resumable pipeline stages: each writes into its own folder and ends with a ``stage.json`` marker.

The marker is what makes a stage reusable. It records a key hashed from the
stage's settings and the keys of the stages it reads from, so changing a
setting (or anything upstream) reruns exactly the stages it affects.

A stage's folder is in one of three states when the pipeline reaches it:

* **done**: ``stage.json`` says ``"done"`` with the current key and every
  declared output exists: reuse it;
* **interrupted**: ``stage.json`` says ``"running"`` with the current key:
  keep the folder so the stage can resume its own work (the CAE trainer
  continues from its checkpoint);
* anything else (no marker, another key, missing outputs): start afresh in an
  emptied folder, so stale files of other settings never mix in.

Both markers are written atomically, the "done" one only after every output.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import caex
from caex.errors import CaexError
from caex.utils import read_json, write_json

MARKER = "stage.json"


class StageState(str, Enum):
    DONE = "done"
    INTERRUPTED = "interrupted"
    FRESH = "fresh"


@dataclass
class Stage:
    """One step of the pipeline.

    ``run(folder)`` writes the stage's outputs into ``folder`` and returns a
    small JSON-able summary (the figures the final summary and later stages
    need); ``outputs`` are the files (relative to the folder) that must exist
    for a finished stage to count as complete.
    """

    name: str
    title: str
    settings: Mapping[str, Any]
    run: Callable[[Path], dict[str, Any]]
    outputs: Sequence[str] = ()
    depends: Sequence[str] = ()


@dataclass
class StageOutcome:
    """What happened to a stage in this invocation."""

    name: str
    folder: Path
    reused: bool
    seconds: float  # wall time
    cpu_seconds: float = 0.0  # CPU time of this process (all threads): with one thread, its idle-core cost
    summary: dict[str, Any] = field(default_factory=dict)


def stage_key(settings: Mapping[str, Any], upstream_keys: Sequence[str]) -> str:
    """A short hash of the settings, the upstream keys and caex's version (canonical JSON, so key order does not
    matter): a stage made by another caex, whose presets or generator may differ, is run again, not reused."""
    text = json.dumps({"settings": settings, "upstream": list(upstream_keys), "caex": caex.__version__},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker's content, or ``None`` when it is absent or unreadable (treated as never run)."""
    try:
        marker = read_json(folder / MARKER)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def stage_state(folder: Path, key: str, outputs: Sequence[str]) -> StageState:
    """Classify ``folder`` for a stage whose current key is ``key`` (see the module docstring)."""
    marker = read_marker(folder)
    if marker is None or marker.get("key") != key:
        return StageState.FRESH
    if marker.get("status") == "done":
        complete = all((folder / name).exists() for name in outputs)
        return StageState.DONE if complete else StageState.FRESH
    return StageState.INTERRUPTED if marker.get("status") == "running" else StageState.FRESH


def write_marker(folder: Path, stage: Stage, key: str, status: str, *, seconds: float | None = None,
                 cpu_seconds: float | None = None, summary: dict[str, Any] | None = None) -> None:
    write_json(folder / MARKER, {
        "stage": stage.name,
        "status": status,
        "key": key,
        "settings": dict(stage.settings),
        "depends": list(stage.depends),
        "seconds": None if seconds is None else round(seconds, 2),
        "cpu_seconds": None if cpu_seconds is None else round(cpu_seconds, 2),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "summary": summary or {},
    })


def run_stage(stage: Stage, folder: Path, key: str, *, force: bool = False) -> StageOutcome:
    """Reuse, resume or (re)run one stage; see the module docstring for the rules."""
    state = StageState.FRESH if force else stage_state(folder, key, stage.outputs)
    if state is StageState.DONE:
        marker = read_marker(folder) or {}
        return StageOutcome(stage.name, folder, reused=True, seconds=0.0, summary=marker.get("summary", {}))
    if state is StageState.FRESH and folder.exists():
        if read_marker(folder) is None and any(folder.iterdir()):
            raise CaexError(f"{folder}: exists but was not written by a caex pipeline (no {MARKER}); "
                            "choose another output folder or remove it")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_marker(folder, stage, key, "running")
    started, cpu_started = time.perf_counter(), time.process_time()
    summary = stage.run(folder)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    write_marker(folder, stage, key, "done", seconds=seconds, cpu_seconds=cpu_seconds, summary=summary)
    return StageOutcome(stage.name, folder, reused=False, seconds=seconds, cpu_seconds=cpu_seconds,
                        summary=summary)
