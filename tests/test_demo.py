"""The demo pipeline: stage reuse/resume rules, the settings profiles, and one tiny end-to-end run."""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from caex.cli.main import main
from caex.data import load_dataset
from caex.demo import PROFILES, get_profile, run_demo
from caex.demo import pipeline
from caex.demo.pipeline import load_dataset_file, save_dataset_file
from caex.demo.stages import MARKER, Stage, StageState, read_marker, run_stage, stage_key, stage_state
from caex.errors import CaexError, Interrupted

# --------------------------------------------------------------------------- stage machinery


class CountingStage:
    """A stage that writes one file and counts how often it really ran."""

    def __init__(self, name: str = "work", settings: dict | None = None, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail
        self.stage = Stage(name, "counting", settings or {"n": 1}, self.run, outputs=("out.txt",))

    def run(self, folder: Path) -> dict:
        self.calls += 1
        (folder / "partial.txt").write_text("started")
        if self.fail:
            raise KeyboardInterrupt
        (folder / "out.txt").write_text("done")
        return {"calls": self.calls}


def test_finished_stage_is_reused_with_its_summary(tmp_path):
    counting = CountingStage()
    key = stage_key(counting.stage.settings, [])
    first = run_stage(counting.stage, tmp_path / "work", key)
    second = run_stage(counting.stage, tmp_path / "work", key)
    assert counting.calls == 1 and not first.reused and second.reused
    assert second.summary == {"calls": 1}
    assert read_marker(tmp_path / "work")["status"] == "done"


def test_changed_settings_upstream_missing_output_or_force_rerun(tmp_path, monkeypatch):
    counting = CountingStage()
    folder = tmp_path / "work"
    key = stage_key({"n": 1}, ["upstream-a"])
    run_stage(counting.stage, folder, key)
    assert stage_key({"n": 1}, ["upstream-a"]) == key
    assert stage_key({"n": 2}, ["upstream-a"]) != key and stage_key({"n": 1}, ["upstream-b"]) != key
    with monkeypatch.context() as upgraded:  # another caex's presets may differ under the same names
        upgraded.setattr("caex.__version__", "99.0")
        assert stage_key({"n": 1}, ["upstream-a"]) != key
    run_stage(counting.stage, folder, stage_key({"n": 2}, ["upstream-a"]))
    assert counting.calls == 2
    (folder / "out.txt").unlink()  # a declared output vanished: not complete any more
    new_key = stage_key({"n": 2}, ["upstream-a"])
    assert stage_state(folder, new_key, ["out.txt"]) is StageState.FRESH
    run_stage(counting.stage, folder, new_key)
    run_stage(counting.stage, folder, new_key, force=True)
    assert counting.calls == 4


def test_interrupted_stage_keeps_its_folder_for_resume(tmp_path):
    folder = tmp_path / "work"
    failing = CountingStage(fail=True)
    key = stage_key(failing.stage.settings, [])
    with pytest.raises(KeyboardInterrupt):
        run_stage(failing.stage, folder, key)
    assert read_marker(folder)["status"] == "running"
    assert stage_state(folder, key, ["out.txt"]) is StageState.INTERRUPTED
    seen = []
    resumed = Stage("work", "resume", failing.stage.settings,
                    lambda f: seen.append((f / "partial.txt").read_text()) or {}, outputs=())
    run_stage(resumed, folder, key)
    assert seen == ["started"]  # the interrupted stage's work was still there
    # with other settings, the leftovers are cleared first
    other = Stage("work", "fresh", {"n": 9}, lambda f: seen.append((f / "partial.txt").exists()) or {})
    run_stage(other, folder, stage_key({"n": 9}, []))
    assert seen == ["started", False]


def test_foreign_folder_is_not_deleted(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    counting = CountingStage()
    with pytest.raises(CaexError, match="not written by a caex pipeline"):
        run_stage(counting.stage, folder, "k")
    assert (folder / "precious.txt").read_text() == "keep me"


def test_run_demo_force_and_recomputed_upstream(tmp_path, monkeypatch):
    """run_demo's own rules, on stand-in stages: reuse, --force, and a recomputed stage's dependants rerun."""
    calls: list[str] = []
    settings = {"a": {"n": 1}, "b": {"n": 1}, "c": {"n": 1}}

    def stand_ins(profile, seed, artefacts, verbose):
        def make(name, depends):
            def run(folder):
                calls.append(name)
                (folder / "out.txt").write_text(name)
                return {}
            return Stage(name, name, dict(settings[name]), run, outputs=("out.txt",), depends=depends)
        return [make("a", ()), make("b", ("a",)), make("c", ())]

    monkeypatch.setattr(pipeline, "build_stages", stand_ins)
    monkeypatch.setattr("caex.report.build_report", lambda run, out: Path(out).write_text("<html></html>"))
    run_demo(tmp_path, profile="tiny", verbose=False)
    run_demo(tmp_path, profile="tiny", verbose=False)
    assert calls == ["a", "b", "c"]
    run_demo(tmp_path, profile="tiny", verbose=False, force=True)
    assert calls == ["a", "b", "c"] * 2
    calls.clear()
    (tmp_path / "a" / "out.txt").unlink()  # "a" is incomplete: it reruns, "b" reads it and follows, "c" not
    run_demo(tmp_path, profile="tiny", verbose=False)
    settings["c"] = {"n": 2}  # changed settings rerun just that stage
    result = run_demo(tmp_path, profile="tiny", verbose=False)
    assert calls == ["a", "b", "c"] and [o.reused for o in result.outcomes] == [True, True, False]


# --------------------------------------------------------------------------- profiles and data file


def test_a_second_demo_into_the_same_folder_is_refused_before_it_deletes_anything(tmp_path):
    """Two `caex demo --force` at once: the second deleted the stage folders, locks included, that the first was
    writing, and both trained into one CAE folder."""
    from caex.utils.io import folder_lock

    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    (out / "data" / "kept.txt").write_text("the first run's")
    with folder_lock(out, "caex demo"), pytest.raises(CaexError, match=r"demo: in use by caex demo \(pid \d+\)"):
        run_demo(out, profile="tiny", force=True, verbose=False)
    assert (out / "data" / "kept.txt").read_text() == "the first run's"


def test_profiles_shrink_with_their_budget():
    default, fast, tiny = PROFILES["default"], PROFILES["fast"], PROFILES["tiny"]
    assert default.budget_seconds == 900 and fast.budget_seconds == 180
    for small, big in ((fast, default), (tiny, fast)):
        assert small.cae.iterations < big.cae.iterations
        assert small.data.per_class < big.data.per_class
        assert small.evaluate.n_images < big.evaluate.n_images
        assert small.evaluate.lime_samples < big.evaluate.lime_samples
    assert default.data.spec == "synthetic:classes=4,per_class=300,size=64"


def test_profile_replace_and_errors():
    profile = get_profile("tiny").replace(cae={"iterations": 2}, explain={"steps": 3})
    assert profile.cae.iterations == 2 and profile.explain.steps == 3
    assert profile.cae.preset == "tiny" and get_profile("tiny").cae.iterations == 4  # original untouched
    with pytest.raises(CaexError, match="unknown settings block 'nope'"):
        profile.replace(nope={"x": 1})
    with pytest.raises(CaexError, match=r"^demo profile: cae settings have no 'iters' \(they are: preset, dc, "
                                        r"iterations, batch_size, sample_every, max_shift\)$"):
        profile.replace(cae={"iters": 1})
    with pytest.raises(CaexError, match=r"^demo profile: manifold settings: tsne='no': must be True or False$"):
        profile.replace(manifold={"tsne": "no"})  # was taken as true
    with pytest.raises(CaexError, match=r"^demo profile: cae settings: expected a dict of settings, got 5$"):
        profile.replace(cae=5)
    with pytest.raises(CaexError, match="unknown demo profile 'huge'"):
        get_profile("huge")
    assert get_profile.__doc__  # exported, and help(get_profile) showed nothing


@pytest.mark.parametrize("blocks, message", [
    (dict(evaluate={"methods": ("cae", "gradcm")}), "evaluate settings: unknown method 'gradcm'; choose from cae, "),
    (dict(evaluate={"methods": "cae"}), "evaluate settings: methods='cae': must be a non-empty sequence of method "
                                        "names"),
    (dict(evaluate={"n_images": 0}), "evaluate settings: n_images=0: must be a whole number, at least 1"),
    (dict(cae={"iterations": "5"}), "cae settings: iterations='5': must be a whole number, at least 1"),
    (dict(cae={"preset": "huge"}), "cae settings: preset='huge': choose one of tiny, small, paper"),
    (dict(cae={"dc": "critic"}), "cae settings: dc='critic': choose 'discriminator' or 'classifier'"),
    (dict(cae={"max_shift": -1}), "cae settings: max_shift=-1: must be a whole number, at least 0"),
    (dict(manifold={"folds": 1}), "manifold settings: folds=1: must be a whole number, at least 2"),
    (dict(explain={"steps": 1}), "explain settings: steps=1: a path needs 2 to 1000 steps (a whole number)"),
    (dict(data={"per_class": 1}), "data settings: per_class=1: must be a whole number, at least 2"),
    (dict(data={"size": 16}), "data settings: synthetic: images of 16 px are out of range (32..256)"),
    (dict(classifier={"arch": "resnet"}), "classifier settings: unknown architecture 'resnet'; choose one of "),
    (dict(classifier={"epochs": 2.5}), "classifier settings: epochs=2.5: must be a whole number, at least 1"),
])
def test_profile_settings_are_checked_when_made_not_at_their_stage(blocks: dict, message: str) -> None:
    """A typo in a late stage's settings used to surface only after the earlier stages had run."""
    with pytest.raises(CaexError, match=f"^demo profile: {re.escape(message)}"):
        get_profile("tiny").replace(**blocks)


def test_built_in_profiles_are_valid_and_their_stage_settings_unchanged() -> None:
    """The checks add no field: each stage's key hashes exactly the block's settings, as before."""
    for profile in PROFILES.values():
        assert profile.replace(**{block: {} for block in ("data", "classifier", "cae", "manifold", "explain",
                                                          "evaluate")}) == profile
    assert dataclasses.asdict(PROFILES["tiny"].cae) == {"preset": "tiny", "dc": "classifier", "iterations": 4,
                                                        "batch_size": 4, "sample_every": 2, "max_shift": None}
    assert get_profile("tiny").replace(cae={"max_shift": None}, evaluate={"methods": ("ig",)}).evaluate.methods == (
        "ig",)


@pytest.mark.parametrize("max_shift, expected", [(None, 0), (3, 3)])  # None: the tiny preset's own 0
def test_cae_stage_passes_the_profile_shift_to_the_trainer(tmp_path, monkeypatch, max_shift, expected):
    import caex.training

    seen = []

    def fake_train_cae(bundle, config, train_config, **kwargs):
        seen.append(train_config.max_shift)
        raise KeyboardInterrupt  # stop the demo once the CAE stage has built its settings

    monkeypatch.setattr(caex.training, "train_cae", fake_train_cae)
    with pytest.raises(KeyboardInterrupt):
        run_demo(tmp_path / "demo", profile=get_profile("tiny").replace(cae={"max_shift": max_shift}),
                 verbose=False)
    assert seen == [expected]
    assert get_profile("fast").cae.max_shift == 0  # measured: 2,000 iterations at 32 px do better unshifted


def test_an_out_that_is_a_file_is_one_line_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "afile"), "--fast"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("caex demo: error: --out") and "is a file, not a folder" in err and err.count("\n") == 1


def test_dataset_file_round_trip(tmp_path):
    bundle = load_dataset("synthetic:classes=2,per_class=4,size=32", seed=3)
    loaded = load_dataset_file(save_dataset_file(bundle, tmp_path / "d.safetensors"))
    assert loaded.class_names == bundle.class_names and loaded.spec == bundle.spec
    assert loaded.mirror_symmetric  # the synthetic set's declaration survives, so the demo's CAE flips too
    assert loaded.seed == 3  # so is the split seed the demo's models record
    asymmetric = dataclasses.replace(bundle, mirror_symmetric=False)
    assert not load_dataset_file(save_dataset_file(asymmetric, tmp_path / "a.safetensors")).mirror_symmetric
    for split in ("train", "test"):
        original, copy = getattr(bundle, split), getattr(loaded, split)
        assert torch.equal(original.images, copy.images) and torch.equal(original.labels, copy.labels)
        assert torch.equal(original.masks, copy.masks) and original.sources == copy.sources
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(CaexError, match="bad.safetensors: not a readable demo data set"):
        load_dataset_file(tmp_path / "bad.safetensors")


# --------------------------------------------------------------------------- end to end (tiny)

COMPUTING_STAGES = ("data", "classifier", "cae", "manifold", "explain", "evaluate")


def _marker_times(out: Path) -> dict[str, int]:
    return {name: (out / name / MARKER).stat().st_mtime_ns for name in COMPUTING_STAGES
            if (out / name / MARKER).is_file()}


@pytest.mark.slow
def test_demo_end_to_end_resumes_after_interruption(tmp_path, monkeypatch):
    out = tmp_path / "demo"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # 1. interrupted while explaining: the four finished stages keep their "done" markers
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "explain_examples", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_demo(out, profile="tiny", verbose=False)
    assert {name: read_marker(out / name)["status"] for name in _marker_times(out)} == {
        "data": "done", "classifier": "done", "cae": "done", "manifold": "done", "explain": "running"}
    before = _marker_times(out)

    # 2. the rerun reuses them untouched and finishes the rest
    result = run_demo(out, profile="tiny", verbose=False)
    after = _marker_times(out)
    assert [o.reused for o in result.outcomes] == [True, True, True, True, False, False]
    assert all(after[name] == before[name] for name in ("data", "classifier", "cae", "manifold"))
    for path in ("data/samples.png", "classifier/classifier.json", "cae/model.safetensors", "cae/log.jsonl",
                 "manifold/summary.json", "manifold/paths.png", "explain/explanations.json",
                 "evaluate/results.json", "evaluate/gallery.png", "report.html"):
        assert (out / path).is_file(), path
    recorded = json.loads((out / "cae/train_config.json").read_text())
    assert (recorded["hflip"], recorded["max_shift"]) == (True, 0)  # the data file kept "mirror-symmetric"
    examples = json.loads((out / "explain/explanations.json").read_text())["examples"]
    assert [e["label"] for e in examples] == ["normal", "cnv"]  # one test image per class
    assert all((out / "explain" / f"{e['stem']}_path.gif").is_file() for e in examples)
    for example in examples:  # caex explain's files, written by its own code (the demo had a drifting copy)
        written = json.loads((out / "explain" / f"{example['stem']}.json").read_text())
        assert written["flip_step"] == example["flip_step"] and written["target"]["class"] == example["target"]
        assert (out / "explain" / written["files"]["saliency"]).is_file()
        # how its maps were made, as caex explain records its own (a script reading those hit a KeyError here)
        assert set(written["settings"]) == {"cae", "classifier", "arch", "path", "reference", "steps", "target",
                                            "all_targets", "target_by", "saliency", "smoothing", "stop_at_flip",
                                            "seed"}
        assert (written["settings"]["path"], written["settings"]["steps"]) == ("guided", written["steps"])

    text = result.report.read_text(encoding="utf-8")
    HTMLParser().feed(text)
    assert "http://" not in text and "https://" not in text and 'src="//' not in text
    assert text.count("data:image/png;base64,") >= 9
    lines = result.summary_lines()
    accuracy = json.loads((out / "classifier/classifier.json").read_text())["test_accuracy"]
    assert f"classifier test accuracy   {100 * accuracy:.1f}%" in "\n".join(lines)
    assert lines[-1] == f"  report: {out / 'report.html'}"
    ranked = [match[1] for match in (re.fullmatch(r" {4}\d+\. (.+?) +-?\d+\.\d{3}", line) for line in lines)
              if match]
    rows = json.loads((out / "evaluate/results.json").read_text())["methods"]
    assert len(ranked) == sum(row["status"] == "ok" for row in rows) and "CAE" in ranked  # CAE wherever it lands

    # 3. the CAE was interrupted after its last checkpoint: the trainer resumes instead of restarting,
    #    and the stages that read the CAE are recomputed while data and classifier are reused
    marker = read_marker(out / "cae")
    (out / "cae" / MARKER).write_text(json.dumps({**marker, "status": "running"}))
    result = run_demo(out, profile="tiny", verbose=False)
    assert [o.reused for o in result.outcomes] == [True, True, False, False, False, False]
    assert result.summary("cae")["resumed_from"] == get_profile("tiny").cae.iterations

    # 4. `caex report` rebuilds the page from the folder
    assert main(["report", str(out), "--out", str(tmp_path / "again.html")]) == 0
    assert (tmp_path / "again.html").read_text(encoding="utf-8").count("<section") == 8


def test_cli_demo_passes_options_and_prints_summary(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_run_demo(out, **options):
        calls.append((out, options))
        return pipeline.DemoResult(out_dir=Path(out), report=Path(out) / "report.html", profile="fast")

    monkeypatch.setattr("caex.demo.run_demo", fake_run_demo)
    assert main(["demo", "--out", str(tmp_path), "--fast", "--force", "--seed", "3", "--device", "cpu"]) == 0
    assert calls == [(str(tmp_path), {"fast": True, "force": True, "seed": 3, "device": "cpu", "verbose": True})]
    assert capsys.readouterr().out.strip().endswith(f"report: {tmp_path / 'report.html'}")


def test_cli_demo_bad_device_is_one_line(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--device", "warp-drive"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("caex demo: error: device 'warp-drive': not a device name") and "\n" not in err


def test_cli_demo_stopped_by_a_signal_says_to_rerun_the_same_command(tmp_path, monkeypatch, capsys):
    def stopped(out, **options):
        raise Interrupted("stopped by SIGTERM after iteration 40, checkpoint saved", exit_code=143)

    monkeypatch.setattr("caex.demo.run_demo", stopped)
    assert main(["demo", "--out", str(tmp_path), "--fast", "--device", "cpu"]) == 143
    assert capsys.readouterr().err.splitlines()[-1] == (
        "caex demo: stopped by SIGTERM after iteration 40, checkpoint saved (rerun the same command to continue)")
