"""A job killed while writing, or a folder shared with another command, never leaves files that pass for a finished
result of other settings or another model; a file system without ``flock`` still runs every writing command."""

from __future__ import annotations

import errno
import threading
import os
import fcntl
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_training import _configs, _data

import caex.explain.render as render
import caex.training.trainer as trainer
from caex.errors import TrainingError
from caex.explain.files import EarlierOutputs
from caex.report import ReportSources, build_report
from caex.report.html import REPORT_FILE, training_section
from caex.training import train_cae
from caex.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from caex.utils.io import LOCK_FILE, folder_lock

#: What the report says of a run folder without a finished model.
UNFINISHED = "no finished model yet"


# -- caex explain: a rewrite cut short ---------------------------------------------------------------------------
def test_an_explanation_rewritten_with_other_settings_and_cut_short_is_not_finished(tmp_path, monkeypatch,
                                                                                     one_path_explanation) -> None:
    """A rerun with other settings killed after its first pictures left the old JSON naming the old settings and
    files that exist, so --skip-done kept the new maps as the old settings' (they differed by up to 0.59)."""
    source, old, new = str(tmp_path / "scan.png"), {"steps": 4}, {"steps": 8}
    out = tmp_path / "out"
    render.save_explanation(one_path_explanation(target=1, flip_step=2, unflipped=False, probability=0.7), 0,
                            torch.rand(1, 16, 16), out, "scan", source, settings=old)
    assert EarlierOutputs(out).finished_files("scan", source, old, None) >= {"scan.json", "scan_saliency.npy"}
    rerun = one_path_explanation(target=1, flip_step=2, unflipped=False, probability=0.7)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # after the overlay and the map, before the strip, the GIF and the JSON

    monkeypatch.setattr(render, "counterfactual_strip", killed)
    with pytest.raises(KeyboardInterrupt):
        render.save_explanation(rerun, 0, torch.rand(1, 16, 16), out, "scan", source, settings=new)
    assert torch.equal(torch.from_numpy(np.load(out / "scan_saliency.npy")), rerun.saliency[0])  # the new map
    assert not (out / "scan.json").exists()
    assert EarlierOutputs(out).finished_files("scan", source, old, None) == set()


# -- caex train --resume: a final save cut short -------------------------------------------------------------------
def test_a_resume_killed_in_its_final_save_leaves_no_summary_of_the_earlier_model(tmp_path, monkeypatch) -> None:
    """The new model (config.json, weights, codes) sat beside the previous call's summary.json (its iterations, its
    reconstruction error), and ``caex report`` showed those figures as the new model's."""
    run = tmp_path / "run"
    data = _data()
    config, train_config = _configs(iters=2, ckpt_every=2, sample_every=100)
    train_cae(data, config, train_config, run)
    assert json.loads((run / "summary.json").read_text())["iters"] == 2
    longer = _configs(iters=4, ckpt_every=2, sample_every=100)[1]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "_write_summary", killed)
        with pytest.raises(KeyboardInterrupt):
            train_cae(data, config, longer, run, resume=True)
    assert (run / "config.json").is_file() and load_checkpoint(run / CHECKPOINT_FILE).iteration == 4
    assert not (run / "summary.json").exists()
    assert (f"the training summary ({run / 'summary.json'} not found): the final save of the run was cut short "
            "(`caex train --resume` finishes it)") in training_section(ReportSources.from_run(run)).render()
    train_cae(data, config, longer, run, resume=True)  # finishes the save
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iters"] == 4 and summary["trained_iters"] == 0


# -- caex report into a run killed before its first checkpoint -----------------------------------------------------
@pytest.mark.parametrize("reported", [False, True])
def test_a_run_killed_before_its_first_checkpoint_restarts_though_reported(tmp_path, reported: bool) -> None:
    """``caex report`` writes report.html into the run folder by default; resuming then refused the folder ("no
    checkpoint to resume from, and files that are not a run's")."""
    run = tmp_path / "run"
    config, train_config = _configs(iters=2, ckpt_every=2, sample_every=1)

    def killed(iteration: int, cae) -> None:
        raise KeyboardInterrupt  # at the first sample grid, before the first checkpoint

    with pytest.raises(KeyboardInterrupt):
        train_cae(_data(), config, train_config, run, callback=killed)
    assert not (run / CHECKPOINT_FILE).exists() and (run / "log.jsonl").is_file()
    if reported:
        assert build_report(run) == run / REPORT_FILE
    with pytest.warns(UserWarning, match=r"run: the run stopped before its first checkpoint, so resuming starts it "
                                         r"again"):
        train_cae(_data(), config, train_config, run, resume=True)
    assert json.loads((run / "summary.json").read_text())["iters"] == 2
    assert not (run / REPORT_FILE).exists()  # it described the killed run: gone with its logs and grids
    (tmp_path / "other").mkdir()  # any other file still makes the folder no run's
    (tmp_path / "other" / "log.jsonl").write_text("{}")
    (tmp_path / "other" / "notes.html").write_text("<p>mine</p>")
    with pytest.raises(TrainingError, match=r"other: no checkpoint to resume from, and files that are not a run's"):
        train_cae(_data(), config, train_config, tmp_path / "other", resume=True)


# -- caex report on an unfinished run ------------------------------------------------------------------------------
def _started_run(folder: Path) -> Path:
    """A run folder as training leaves it before its model is saved: a log and a sample grid."""
    folder.mkdir(parents=True)
    lines = [json.dumps({"iter": step, "recon_image": 1.0 / step}) for step in range(1, 6)]
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "samples").mkdir()
    Image.new("RGB", (12, 8), (40, 90, 200)).save(folder / "samples" / "iter_0000005.png")
    return folder


def test_the_report_of_a_run_without_a_finished_model_says_so(tmp_path) -> None:
    """A run still training or killed got a training section with curves and a grid and simply no table."""
    run = _started_run(tmp_path / "run")
    text = build_report(run).read_text(encoding="utf-8")
    assert (f"{UNFINISHED} ({run / 'config.json'} not found): the run is still training or "
            "was stopped (`caex train --resume` continues it)") in text
    (run / "config.json").write_text("{}")  # a model saved by CAE.save, which writes no summary: no resume advice
    section = training_section(ReportSources.from_run(run)).render()
    assert f"the training summary ({run / 'summary.json'} not found; CAE.save writes none)" in section
    assert UNFINISHED not in section and "--resume" not in section
    (run / "summary.json").write_text(json.dumps({"iters": 5, "seconds": 2.0, "recon_l1": 0.1}))
    section = training_section(ReportSources.from_run(run)).render()
    assert UNFINISHED not in section and "5 iterations in 2 s" in section


# -- a file system without flock -----------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL])
def test_a_file_system_without_flock_runs_the_job_unguarded_with_a_warning(tmp_path, monkeypatch, code) -> None:
    """Lustre mounted noflock (and some NFS) failed every writing command with "unexpected error: OSError: [Errno
    38] Function not implemented", leaving .caex.lock in the folder it had just made."""
    def unsupported(*args):
        raise OSError(code, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    folder, ran = tmp_path / "new" / "out", []
    warning = (rf"^{re.escape(str(folder))}: not guarded against a second caex job writing into it at the same "
               r"time \(its file system cannot lock files: Function not implemented\)$")
    with pytest.warns(UserWarning, match=warning) as caught, folder_lock(folder, "caex explain"):
        ran.append(folder.is_dir())
        (folder / "result.json").write_text("{}")
    assert ran == [True] and len(caught) == 1
    assert sorted(path.name for path in folder.iterdir()) == ["result.json"]  # no lock file left
    with pytest.warns(UserWarning, match="not guarded"), folder_lock(tmp_path / "empty" / "out", "caex explain"):
        pass
    assert not (tmp_path / "empty").exists()  # nothing written: the folders it made go, as on the locked path
    with warnings.catch_warnings(), pytest.raises(UserWarning, match="not guarded"):
        warnings.simplefilter("error")  # PYTHONWARNINGS=error: the job stops, and still leaves nothing behind
        with folder_lock(tmp_path / "strict" / "out", "caex explain"):
            pytest.fail("ran though its warning is an error")
    assert not (tmp_path / "strict").exists()
    stale = folder / ".codes.csv.abcd1234.tmp"  # old-looking, but unguarded it may be a slow live job's: kept
    stale.write_text("half")
    os.utime(stale, (0, 0))
    with pytest.warns(UserWarning, match="not guarded"), folder_lock(folder, "caex explain"):
        assert stale.exists()


def test_another_flock_error_still_fails_and_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    def denied(*args):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fcntl, "flock", denied)
    with pytest.raises(PermissionError, match="Permission denied"), folder_lock(tmp_path / "new", "caex explain"):
        pytest.fail("ran unguarded")
    assert not (tmp_path / "new").exists()
    with pytest.raises(PermissionError), folder_lock(tmp_path, "caex explain"):
        pytest.fail("ran unguarded")
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_probed_at_the_same_moment_is_still_taken(tmp_path) -> None:
    """A second command's check_not_in_use holds a shared lock on the file for a moment; the first command's lock
    refused itself then, naming the holder of a stale lock file ("in use by caex train (pid 99999)")."""
    folder = tmp_path / "race"
    folder.mkdir()
    (folder / LOCK_FILE).write_text("caex train (pid 99999)")
    probe = (folder / LOCK_FILE).open("r")
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    threading.Timer(0.03, probe.close).start()  # the probe lets go, as check_not_in_use does at once
    with folder_lock(folder, "caex explain"):
        assert "caex explain" in (folder / LOCK_FILE).read_text()
