"""The helpers every command shares: the warnings about files an earlier run left in ``--out`` and about models
trained on another split of the data."""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from caex.classifier import build_classifier_network, save_bundle
from caex.cli.common import warn_stale_files
from caex.data import load_dataset
from caex.model import CAE, CAEConfig
from caex.utils.io import atomic_write_text


def test_files_not_rewritten_are_named_once_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for name in ("a.json", "b.json", "old.png", ".DS_Store"):
        atomic_write_text(out / name, name)
    (out / "sub").mkdir()
    with pytest.warns(UserWarning) as caught, warn_stale_files(out):
        atomic_write_text(out / "a.json", "new")
        atomic_write_text(out / "b.json", "b.json")  # the same bytes again: rewritten all the same
        atomic_write_text(out / "c.json", "new")  # new files are this run's
    assert [str(warning.message) for warning in caught] == [
        f"{out} also holds 1 file(s) that this run did not write, e.g. of an earlier run (first: old.png); "
        "use a fresh --out to keep runs apart"]
    assert (out / "old.png").read_text() == "old.png"


def test_a_rewrite_within_the_mtime_granularity_counts_as_rewritten(tmp_path: Path) -> None:
    """A file system that keeps whole seconds (or two) gives a quick rerun's file the same mtime as the old one."""
    path = atomic_write_text(tmp_path / "results.csv", "old")
    old = path.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with warn_stale_files(tmp_path):
            atomic_write_text(path, "new")
            os.utime(path, ns=(old, old))


def test_system_metadata_in_an_out_folder_is_no_stale_result(tmp_path: Path) -> None:
    """Windows' Thumbs.db and desktop.ini, like a Mac's hidden .DS_Store, were named as an earlier run's files."""
    for name in ("Thumbs.db", "desktop.ini", ".DS_Store"):
        (tmp_path / name).write_text("")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with warn_stale_files(tmp_path):
            atomic_write_text(tmp_path / "results.csv", "new")


def test_an_out_that_does_not_exist_yet_or_an_error_warns_of_nothing(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "old.png", "old")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with warn_stale_files(tmp_path / "new"):
            atomic_write_text(tmp_path / "new" / "a.json", "new")
        with pytest.raises(KeyboardInterrupt), warn_stale_files(tmp_path):  # the error is the message, not this
            raise KeyboardInterrupt


def test_models_trained_on_another_split_of_the_same_data_are_warned_about(tmp_path: Path) -> None:
    """Only the same spec with another recorded split seed warns (unknown provenance or other data do not),
    naming the model and the --split-seed that would match it; the API warns (the CLI alone did before)."""
    from caex.classifier import check_compatible, load_classifier

    data = load_dataset("synthetic:classes=2,per_class=4,size=32", seed=1)
    assert data.seed == 1
    config = CAEConfig.preset("tiny", image_size=32, channels=1, num_classes=2)
    net = build_classifier_network("smallcnn", channels=1, num_classes=2, image_size=32)
    save_bundle(net, tmp_path / "clf", class_names=data.class_names, image_size=32, data_spec=data.spec, data_seed=0)
    CAE(config, data.class_names, data.spec, data_seed=0).save(tmp_path / "cae")
    classifier, cae = load_classifier(tmp_path / "clf", device="cpu"), CAE.load(tmp_path / "cae", device="cpu")
    with pytest.warns(UserWarning) as caught:
        check_compatible(classifier, data)
        cae.check_split(data)
    assert [str(warning.message) for warning in caught] == [
        f"{who} was trained on {data.spec} split with seed 0, but it is loaded here with seed 1: its test images "
        "are not the ones the model held out (some may be its training images); load the data with seed 0 "
        "(--split-seed 0)" for who in (f"the classifier {tmp_path / 'clf'}", f"the CAE in {tmp_path / 'cae'}")]
    save_bundle(net, tmp_path / "clf", class_names=data.class_names, image_size=32, data_spec=data.spec, data_seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_compatible(load_classifier(tmp_path / "clf", device="cpu"), data)
        for other in (CAE(config, data.class_names, data.spec, data_seed=1), CAE(config, data.class_names, data.spec),
                      CAE(config, data.class_names, "synthetic:classes=2", data_seed=0)):
            other.check_split(data)

def test_a_path_typed_another_way_is_the_same_data_for_the_split_check(tmp_path: Path, monkeypatch) -> None:
    """"fold", "fold/", "./fold" and its absolute path were four data sets, so the warning above went silent."""
    from caex.data.types import same_data_spec

    monkeypatch.chdir(tmp_path)
    for typed in ("fold/", "./fold", str(tmp_path / "fold"), "sub/../fold"):
        assert same_data_spec("fold", typed), typed
    assert not same_data_spec("fold", "other") and not same_data_spec("synthetic", "synthetic:classes=2")
    # a project copied elsewhere: the model's absolute record names the folder it was trained on there
    assert same_data_spec("/old/machine/projects/fold", "fold") and not same_data_spec("/old/fold", "mnist:4,9")
    assert not same_data_spec("/old/machine/projects/fold", "fold", by_name=False)
    for built_in, folder in (("synthetic", "/x/synthetic"), ("mnist", "./mnist")):  # built-in data is no folder
        assert not same_data_spec(built_in, folder) and not same_data_spec(folder, built_in)
    assert not same_data_spec(None, "fold") and same_data_spec("synthetic", "synthetic")


def test_a_relative_data_path_is_recorded_absolute_so_the_split_check_works_from_another_folder(
        tmp_path: Path, monkeypatch) -> None:
    """A bundle recorded DATA as typed ("fold"); a later command run from another folder resolved it there, found
    other data, and the split-seed warning went silent (and a run from inside the data folder was titled ".")."""
    from PIL import Image

    from caex.classifier import ClassifierInfo, check_compatible, load_classifier
    from caex.data.spec import as_recorded
    from caex.training.trainer import _data_record

    fold = tmp_path / "fold"
    for name in ("a", "b"):
        (fold / name).mkdir(parents=True)
        for index in range(3):
            Image.fromarray(np.full((8, 8), 40 * index, dtype=np.uint8)).save(fold / name / f"{index}.png")
    monkeypatch.chdir(tmp_path)
    net = build_classifier_network("smallcnn", channels=1, num_classes=2, image_size=32)
    save_bundle(net, "clf", class_names=["a", "b"], image_size=32, data_spec="fold/", data_seed=0)
    assert ClassifierInfo.read(tmp_path / "clf" / "classifier.json").data_spec == str(fold)
    assert as_recorded("synthetic:size=32") == "synthetic:size=32" and as_recorded("no-such") == "no-such"
    typed = load_dataset("./fold", size=32)
    assert _data_record(typed, typed.train)["spec"] == str(fold)  # what a CAE trained on it records
    monkeypatch.chdir(tmp_path.parent)  # another folder: "fold" would name nothing here
    classifier, data = load_classifier(tmp_path / "clf", device="cpu"), load_dataset(str(fold), size=32, seed=1)
    with pytest.warns(UserWarning, match=f"^the classifier {tmp_path / 'clf'} was trained on {fold} split with seed 0"):
        check_compatible(classifier, data)


def test_a_source_with_its_own_test_split_records_no_split_seed(tmp_path: Path) -> None:
    """A folder's train/ and test/ or an npz's test_* arrays fix the split, so no seed can move it."""
    images, labels = np.zeros((4, 8, 8), dtype=np.uint8), np.array([0, 1, 0, 1])
    np.savez(tmp_path / "own.npz", train_images=images, train_labels=labels, test_images=images, test_labels=labels)
    np.savez(tmp_path / "none.npz", train_images=images, train_labels=labels)
    assert load_dataset(str(tmp_path / "own.npz"), size=32, seed=3).seed is None
    assert load_dataset(str(tmp_path / "none.npz"), size=32, seed=3).seed == 3


def test_a_cae_saved_and_loaded_keeps_its_data_provenance(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = CAEConfig.preset("tiny", image_size=16, channels=1, num_classes=2)
    CAE(config, ["a", "b"], "mnist:4,9", data_seed=7).save(tmp_path / "run")
    loaded = CAE.load(tmp_path / "run")
    assert (loaded.data_spec, loaded.data_seed) == ("mnist:4,9", 7)


def test_class_names_that_differ_between_two_parts_are_warned_about_unless_they_are_indices() -> None:
    from caex.data.types import warn_other_class_names

    with pytest.warns(UserWarning) as caught:
        warn_other_class_names("the classifier", ["0", "1"], "the CAE", ["normal", "cnv"])  # indices: silent
        warn_other_class_names("the classifier", ["four", "nine"], "the CAE", ["normal", "cnv"])
    assert [str(warning.message) for warning in caught] == [
        "the classifier names its classes four, nine but the CAE names them normal, cnv: results are labelled by "
        "position; check that they are the same classes in the same order"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_other_class_names("the classifier", ["a", "b"], "the CAE", ["a", "b"])
        warn_other_class_names("the classifier", ["a", "b"], "the CAE", ["0", "1"])


@pytest.mark.parametrize("argv", [["train"], ["explain", "run", "x.png", "--path", "foo"], ["nosuch"]])
def test_argument_errors_are_one_line_naming_the_command(argv, capsys) -> None:
    """argparse printed its usage block before the error; the contract is one line, exit 2."""
    from caex.cli.main import main

    code = main(argv)  # the exit status returned, as for every other error
    err = capsys.readouterr().err
    command = f"caex {argv[0]}" if argv[0] != "nosuch" else "caex"
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"{command}: error: ") and err.rstrip().endswith(f"(see {command} --help)")


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path: Path, monkeypatch) -> None:
    """train-classifier and manifold failed on a read-only --out only after all their work, naming a temp file."""
    from caex.cli.common import check_output_folder
    from caex.errors import CaexError

    check_output_folder(str(tmp_path / "new" / "out"))  # the nearest existing folder is writable
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(CaexError, match=rf"--out {tmp_path / 'new'}: {tmp_path} is not writable"):
        check_output_folder(str(tmp_path / "new"))


def test_json_is_written_without_nan_however_deep(tmp_path):
    """Python writes NaN, which browsers and most JSON readers refuse; an undefined figure is a null."""
    import math

    from caex.utils.io import json_safe, write_json

    value = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf, "d": (2, math.nan)}], "e": "nan", "f": 3}
    assert json_safe(value) == {"a": None, "b": [1.0, None, {"c": None, "d": [2, None]}], "e": "nan", "f": 3}
    write_json(tmp_path / "x.json", value)
    assert "NaN" not in (tmp_path / "x.json").read_text() and "Infinity" not in (tmp_path / "x.json").read_text()


def test_warnings_point_at_the_callers_line_however_deep_in_caex(tmp_path):
    """Hand-counted stacklevels pointed inside caex once a helper was reached by another path."""
    import numpy as np

    from caex.data import load_dataset

    path = tmp_path / "set.npz"
    np.savez(path, train_images=np.zeros((6, 10, 10), np.uint8), train_labels=np.arange(6) % 2, extra=np.zeros(1))
    with pytest.warns(UserWarning, match="arrays extra are not read") as caught:
        load_dataset(str(path))  # four calls deep inside caex
    assert caught[0].filename == __file__


def test_count_options_are_refused_while_parsing_with_one_message_format():
    import argparse

    from caex.cli.common import at_least

    parse = at_least(2)
    assert parse("2") == 2 and parse("10") == 10
    for text, message in (("1", "must be at least 2, got 1"), ("-3", "must be at least 2, got -3"),
                          ("2.5", "expected a whole number, got '2.5'"), ("x", "expected a whole number, got 'x'")):
        with pytest.raises(argparse.ArgumentTypeError, match=rf"^{re.escape(message)}$"):
            parse(text)


def test_a_warning_at_the_exit_of_a_caex_with_block_points_at_the_callers_with(tmp_path):
    """The walk stopped in contextlib's __exit__, so -W filters by module no longer reached the warning."""
    (tmp_path / "old.png").write_bytes(b"an earlier run's file")
    with pytest.warns(UserWarning, match="also holds 1 file") as caught, warn_stale_files(tmp_path):
        pass
    assert caught[0].filename == __file__


def test_a_classifier_that_records_no_provenance_is_still_checked(tmp_path):
    """check_compatible (now in evaluate) raised AttributeError for classifiers without source or data_seed."""
    from caex.classifier import TorchClassifier, check_compatible

    data = load_dataset("synthetic:classes=2,per_class=4,size=32")
    net = build_classifier_network("smallcnn", channels=1, num_classes=2, image_size=32)
    classifier = TorchClassifier(net, data.class_names, 32, 1)
    for name in ("source", "data_spec", "data_seed"):
        delattr(classifier, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_compatible(classifier, data)


@pytest.mark.parametrize("rank, printed", [("0", True), ("1", False)])
def test_under_torchrun_commands_other_than_train_refuse_once(monkeypatch, capsys, rank: str, printed: bool) -> None:
    """N copies of `caex explain` (or evaluate, manifold, ...) raced for one output folder and failed on a lock
    held by their own other rank; they refuse before any work, rank 0 saying so for the job."""
    from caex.cli.main import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    assert main(["data", "show", "synthetic", "--out", "unused.png"]) == 2
    err = capsys.readouterr().err
    assert (err == "caex data show: error: runs as one process; of the commands only `caex train` runs under torchrun "
                   "(start this one without it)\n") if printed else err == ""


def test_under_torchrun_only_rank_0_warns(monkeypatch) -> None:
    """Every rank runs the same checks: a job printed each warning once per process."""
    from caex.utils.warn import warn

    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, expected in (("1", 0), ("0", 1)):
        monkeypatch.setenv("RANK", rank)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn("the same on every rank")
        assert len(caught) == expected, rank


@pytest.mark.parametrize("model", ["run", "clf"])
@pytest.mark.parametrize("argv", [["explain", "RUN", "imgs/config.png", "--classifier", "CLF"],
                                  ["manifold", "RUN", "synthetic", "--classifier", "CLF"],
                                  ["evaluate", "none", "synthetic", "--methods", "random", "--classifier", "CLF"]])
def test_a_model_folder_as_out_of_a_results_command_is_refused_before_any_work(tmp_path: Path, capsys, argv,
                                                                                 model: str) -> None:
    """manifold --out RUN replaced the training's summary.json; explain --out RUN of a config.png replaced the CAE's
    config.json, and the run no longer loaded."""
    from caex.cli.common import check_output_folder
    from caex.cli.main import main

    names = ("run/config.json", "run/model.safetensors", "clf/classifier.json")
    for name in names:
        atomic_write_text(tmp_path / name, name)
    out = tmp_path / model
    argv = [str(tmp_path / "run") if arg == "RUN" else str(tmp_path / "clf") if arg == "CLF" else arg for arg in argv]
    code = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    kind = "CAE run" if model == "run" else "classifier bundle"
    assert code == 2 and err == (f"caex {argv[0]}: error: --out {out}: is a {kind} folder, whose files this command's "
                                 "results could overwrite; choose an --out of its own (e.g. a sub-folder)\n")
    assert all((tmp_path / name).read_text() == name for name in names)
    assert len(list(out.iterdir())) == (2 if model == "run" else 1)  # nothing written beside them
    check_output_folder(str(out))  # train --resume and train-classifier --force write their own folders
    check_output_folder(str(out / "manifold"), results=True)


def test_a_cae_run_still_training_is_a_model_folder_too(tmp_path: Path) -> None:
    """Only a finished run (config.json + model.safetensors) was recognised: an input named train_config.png
    explained into a run still training replaced its train_config.json."""
    from caex.cli.common import check_output_folder
    from caex.errors import CaexError

    atomic_write_text(tmp_path / "train_config.json", "{}")
    check_output_folder(str(tmp_path), results=True)  # alone: explain's summary of an image named train_config.png
    atomic_write_text(tmp_path / "log.jsonl", "")
    with pytest.raises(CaexError, match=r"is a CAE run folder"):
        check_output_folder(str(tmp_path), results=True)


def test_no_command_prints_the_help_where_errors_go(capsys) -> None:
    """`caex` alone printed its whole help on stdout, the results' stream, and exited 2 as for an error."""
    from caex.cli.main import main

    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: caex") and "explain" in captured.err


def test_python_m_caex_is_the_caex_command() -> None:
    """`python -m caex` failed: caex had no __main__.py (the fallback where the scripts folder is not on PATH)."""
    import subprocess
    import sys

    from caex import __version__

    done = subprocess.run([sys.executable, "-m", "caex", "--version"], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, f"caex {__version__}\n"), done.stderr


@pytest.mark.parametrize("argv", [["explain", "run", "x.png", "--classifier", "clf"],
                                  ["manifold", "run", "synthetic", "--classifier", "clf"],
                                  ["evaluate", "none", "synthetic", "--classifier", "clf"],
                                  ["demo"]])
def test_every_command_that_computes_takes_threads_and_sets_them_before_any_work(argv, tmp_path: Path, capsys,
                                                                                  monkeypatch) -> None:
    """Only train and train-classifier took --threads; on a shared machine the others spun every core."""
    from caex.cli.main import main

    (tmp_path / "file").write_text("")
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    assert main([*argv, "--threads", "1", "--out", str(tmp_path / "file" / "out")]) == 2  # refused: under a file
    # the command's count first, then the caller's given back (main() may run in a notebook's process)
    assert calls == [1, torch.get_num_threads()] and "is a file, not a folder" in capsys.readouterr().err
    assert main([*argv, "--threads", "0", "--out", str(tmp_path / "out")]) == 2
    assert "--threads: must be at least 1, got 0" in capsys.readouterr().err


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its name as typed (``data show`` too)."""
    from caex.cli.main import build_parser

    found = {}
    for action in build_parser()._subparsers._group_actions:
        for name, parser in action.choices.items():
            found[name] = parser
            for sub in parser._subparsers._group_actions if parser._subparsers else ():
                found.update({f"{name} {child}": command for child, command in sub.choices.items()})
    return found


def _option_help(command: str, option: str) -> str:
    return next(" ".join(action.help.split()) for action in _commands()[command]._actions
                if option in action.option_strings)


@pytest.mark.parametrize("command", ["demo", "explain", "manifold", "evaluate", "train", "train-classifier",
                                     "data show", "report"])
def test_every_main_command_ends_its_help_with_examples_that_parse(command: str, capsys) -> None:
    """Only evaluate --help showed examples; each must stay a command line its parser takes as printed."""
    from caex.cli.main import build_parser

    parser = _commands()[command]
    lines = parser.format_help().split("\nexamples:\n", 1)[1].splitlines()
    assert 2 <= len(lines) <= 3 and all(line.startswith(f"  caex {command} ") for line in lines), lines
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.command == command.split()[0]


@pytest.mark.parametrize(("command", "option", "default"), [
    ("train", "--time-limit", "default: none"), ("train", "--model", "default: none"),
    ("train", "--loss", "default: none"), ("report", "--manifold", "default: a demo folder's RUN/manifold/"),
    ("report", "--explain", "default: a demo folder's RUN/explain/"),
    ("report", "--evaluate", "default: a demo folder's RUN/evaluate/"),
    ("explain", "--target-by", "default: probability; note that caex evaluate --cae-target-by defaults to code"),
    ("evaluate", "--cae-target-by", "note that caex explain --target-by defaults to probability"),
    ("evaluate", "--cae-target-by", "default: code"), ("train", "--critic-noise", "(default: 0)"),
])
def test_option_help_names_its_default(command: str, option: str, default: str) -> None:
    """Several options' help left the default out, and explain and evaluate pick a target class by different
    defaults (kept: published figures depend on them) without saying so."""
    assert default in _option_help(command, option)


def test_output_keeps_file_names_bytes_and_replaces_what_it_cannot_encode() -> None:
    """Switching an ASCII stdout to errors="replace" turned a file name's undecodable bytes into '?' too."""
    from caex.cli.main import _ESCAPE_OR_REPLACE

    assert "a\udcffb\u2191".encode("ascii", errors=_ESCAPE_OR_REPLACE) == b"a\xffb?"
    assert "\u2191\udcff".encode("ascii", errors=_ESCAPE_OR_REPLACE) == b"?\xff"  # one run of both kinds


def test_a_broken_pipe_other_than_stdout_is_an_error(monkeypatch, capsys) -> None:
    """Every BrokenPipeError ended quietly, as if `| head` had closed stdout, even one from another pipe."""
    import caex.cli.data
    from caex.cli.main import main

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(caex.cli.data, "run_show", broken)
    assert main(["data", "show", "synthetic", "--out", "unused.png"]) == 2
    assert capsys.readouterr().err == "caex data show: error: a pipe: Broken pipe\n"


def test_environment_values_that_are_not_numbers_are_one_line_errors_where_they_matter(monkeypatch) -> None:
    from caex.errors import TrainingError
    from caex.training.distributed import init_distributed
    from caex.utils.device import torchrun_rank

    monkeypatch.setenv("WORLD_SIZE", "two")
    assert torchrun_rank() is None  # was a raw ValueError from every warning and the CLI's start
    with pytest.raises(TrainingError, match=r"^WORLD_SIZE='two': not a number of processes; start distributed "
                                            r"runs with torchrun$"):
        init_distributed("cpu")


def test_neither_importing_the_cli_nor_asking_its_version_imports_torch() -> None:
    """caex.cli.main imported torch (seconds) before the Ctrl-C handler was in place: Ctrl-C then showed a raw
    traceback; and `caex --version` waited for torch too."""
    import subprocess
    import sys

    from caex import __version__

    code = ("import sys, caex.cli.main\nprint('torch' in sys.modules)\n"
            "try:\n    caex.cli.main.main(['--debug', '--version'])\n"
            "except SystemExit as exc:\n    print(exc.code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout == f"False\ncaex {__version__}\n0 False\n", done.stderr


@pytest.mark.parametrize(("argv", "shown"), [
    (["data", "show", "synthetic", "--out", "g.png", "--seed", "-1"], "-1"),  # numpy refused it after the loading
    (["data", "show", "synthetic", "--out", "g.png", "--seed", str(2**64)], str(2**64)),  # torch: "Overflow ..."
    (["data", "show", "synthetic", "--out", "g.png", "--split-seed", str(2**32)], str(2**32)),
    (["train", "synthetic", "--out", "run", "--seed", "one"], "'one'"),
])
def test_seeds_that_a_generator_would_refuse_are_refused_while_parsing(argv, shown: str, capsys, tmp_path,
                                                                      monkeypatch) -> None:
    from caex.cli.main import main

    monkeypatch.chdir(tmp_path)  # where a seed let through would write its outputs
    command = "caex data show" if argv[0] == "data" else f"caex {argv[0]}"
    assert main(argv) == 2
    assert capsys.readouterr().err == (f"{command}: error: argument {argv[-2]}: must be a whole number from 0 to "
                                       f"4294967295, got {shown} (see {command} --help)\n")


def test_every_seed_option_takes_the_seed_type_and_its_bounds() -> None:
    from caex.cli.common import seed_number
    from caex.utils.checks import MAX_SEED

    seeded = {(name, option): action.type for name, parser in _commands().items() for action in parser._actions
              for option in action.option_strings if option in ("--seed", "--split-seed")}
    assert {name for name, option in seeded if option == "--seed"} == {
        "demo", "data show", "train-classifier", "train", "explain", "manifold", "evaluate"}
    assert set(seeded.values()) == {seed_number}
    assert (seed_number("0"), seed_number(str(MAX_SEED))) == (0, 2**32 - 1)


def test_a_report_out_under_a_file_is_refused_before_any_work(tmp_path: Path, capsys, monkeypatch) -> None:
    """It failed only after the whole report was rendered, as "cannot write g.png/x.html (File exists)"."""
    import caex.report
    from caex.cli.main import main

    (tmp_path / "g.png").write_text("")
    monkeypatch.setattr(caex.report, "build_report", lambda *args, **kwargs: pytest.fail("the report was built"))
    out = tmp_path / "g.png" / "x.html"
    assert main(["report", str(tmp_path), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"caex report: error: --out {out}: {tmp_path / 'g.png'} is a file, not a folder\n"


def test_version_is_answered_early_only_where_argparse_would_answer_it(capsys) -> None:
    """The shortcut that answers --version before the parser is built must not take a command's --version."""
    from caex.cli.main import main

    assert main(["data", "show", "--version"]) == 2  # a usage error, as argparse has it
    output = capsys.readouterr()
    assert output.out == "" and output.err.startswith("caex data show: error: ")



def test_a_busy_output_folder_is_refused_before_the_data_is_loaded(tmp_path: Path, capsys, monkeypatch) -> None:
    """The lock refused a second command only once it had loaded its data, minutes on a large folder."""
    import caex.cli.common as common
    from caex.cli.main import main
    from caex.utils.io import LOCK_FILE, check_not_in_use, folder_lock

    def never(*_args, **_kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(common, "load_data_from_args", never)
    check_not_in_use(tmp_path / "missing")  # no folder, no lock file: nothing to refuse, nothing made
    assert not (tmp_path / "missing").exists()
    with folder_lock(tmp_path / "run", "caex train"):
        assert main(["train", "synthetic:classes=2,per_class=4,size=32", "--out", str(tmp_path / "run"),
                     "--preset", "tiny"]) == 2
    assert f"{tmp_path / 'run'}: in use by caex train (pid {os.getpid()}); wait" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_FILE).write_text("caex train (pid 1)")  # a killed job's file, no lock held
    check_not_in_use(tmp_path / "run")


def test_a_name_read_under_an_ascii_locale_is_written_back_as_its_own_bytes(tmp_path: Path) -> None:
    """Under LC_ALL=C with PYTHONUTF8=0, "dätä" reaches caex as "d\\udcc3\\udca4t\\udcc3\\udca4": writing results.md
    raised UnicodeEncodeError after every method had run."""
    atomic_write_text(tmp_path / "results.md", "data `d\udcc3\udca4t\udcc3\udca4`\n")
    assert (tmp_path / "results.md").read_text(encoding="utf-8") == "data `dätä`\n"


def test_json_files_hold_other_alphabets_as_themselves(tmp_path: Path) -> None:
    """A class named "über" was written "\\u00fcber", which grep über did not find; NaN is still null."""
    from caex.utils.io import read_json, write_json

    write_json(tmp_path / "summary.json", {"class_names": ["über", "İstanbul"], "share": math.nan})
    assert '"über"' in (tmp_path / "summary.json").read_text(encoding="utf-8")
    assert read_json(tmp_path / "summary.json") == {"class_names": ["über", "İstanbul"], "share": None}
    # a path that is no UTF-8 holds surrogates: written as their bytes, no JSON reader could read the file
    names = {"latin1": "/data/d\udce4t", "ascii_locale": "/data/d\udcc3\udca4t"}
    write_json(tmp_path / "paths.json", names)
    assert read_json(tmp_path / "paths.json") == names
    assert '"/data/d\\udce4t"' in (tmp_path / "paths.json").read_text(encoding="utf-8")


def test_deferred_warnings_come_once_after_the_block_and_are_not_lost_when_it_fails() -> None:
    """The first version held every warning: one from a loop came once per pass, module filters stopped matching
    (and an explicit module=None made the re-emitted warning ignore an "error" filter), and a block that failed
    lost what it had warned, or then showed what the caller ignored."""
    from caex.utils.warn import warn, warnings_deferred

    class Held(UserWarning):
        pass

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        with warnings_deferred(Held):
            for _ in range(3):
                warn("near chance", Held)
            warn("other", UserWarning)  # not held: shown as it comes, before the held one
            assert [str(w.message) for w in caught] == ["other"]
    assert [str(w.message) for w in caught] == ["other", "near chance"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Held, match="near chance"), warnings_deferred(Held):
            warn("near chance", Held)  # an error after the block, as the caller's filter says
    with warnings.catch_warnings(record=True) as caught, pytest.raises(KeyError):
        warnings.simplefilter("error")
        with warnings_deferred(Held):
            warn("said before the failure", Held)
            raise KeyError("boom")
    assert [str(w.message) for w in caught] == ["said before the failure"]  # shown, not lost
    with warnings.catch_warnings(record=True) as caught, pytest.raises(KeyError):
        warnings.simplefilter("ignore", Held)  # ignored is ignored, whether the block fails or not
        with warnings_deferred(Held):
            warn("ignored", Held)
            raise KeyError("boom")
    assert not caught
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", module=__name__)  # a filter by the caller's module still applies
        with warnings_deferred(Held):
            warn("by module", Held)
    assert not caught
