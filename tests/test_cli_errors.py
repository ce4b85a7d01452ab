"""The CLI's errors name what the user can act on: the dependency that does not import, the (sub-)command an
unknown option was given to, and the flag typed (not the library's field) for a value out of range."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from caex.cli.main import main

REINSTALL = "; reinstall caex with its dependencies: pip install -e . (in caex's source folder)"


def test_a_missing_torch_is_one_line_even_for_help() -> None:
    """Every command's parser imports torch: `caex --help` ended in a 29-line traceback; --debug keeps it."""
    code = ("import sys\nsys.modules['torch'] = None\nfrom caex.cli.main import main\nprint(main(['--help']))\n"
            "try:\n    main(['--debug', '--help'])\nexcept ImportError as exc:\n    print('raised', exc.name)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout == "1\nraised torch\n", done.stderr
    assert done.stderr.startswith("caex: error: cannot import torch (") and done.stderr.endswith(REINSTALL + "\n")
    assert done.stderr.count("\n") == 1


def test_a_dependency_missing_inside_a_command_is_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    """captum, imported on first use, read "unexpected error: ModuleNotFoundError"; --debug keeps the traceback."""
    import caex.cli.report
    from caex.explain.attribution import captum_attr

    monkeypatch.setitem(sys.modules, "captum.attr", None)  # as if not installed
    monkeypatch.setattr(caex.cli.report, "run", lambda args: captum_attr())
    assert main(["report", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("caex report: error: cannot import captum.attr (")
    assert captured.err.endswith(REINSTALL + "\n") and captured.err.count("\n") == 1
    with pytest.raises(ModuleNotFoundError):
        main(["report", str(tmp_path), "--debug"])


@pytest.mark.parametrize(("argv", "expected"), [
    (["explain", "RUN", "img.png", "--classifier", "c", "--out", "o", "--bogus"],
     "caex explain: error: unrecognized arguments: --bogus (see caex explain --help)"),
    (["data", "show", "synthetic", "--out", "g.png", "--bogus", "3"],
     "caex data show: error: unrecognized arguments: --bogus 3 (see caex data show --help)"),
    (["demo", "--preset", "bogus"], "caex demo: error: unrecognized arguments: --preset bogus (see caex demo --help)"),
    (["--bogus"], "caex: error: unrecognized arguments: --bogus (see caex --help)"),  # no command: caex's own
    (["--bogus", "data", "show", "synthetic", "--out", "g.png"],  # before the command: caex's, not data show's
     "caex: error: unrecognized arguments: --bogus (see caex --help)"),
    (["--bogus", "data", "show", "synthetic", "--out", "g.png", "--fast"],  # each refused where it was given
     "caex: error: unrecognized arguments: --bogus (see caex --help)"),
])
def test_an_unknown_option_is_refused_by_its_command(capsys, argv: list[str], expected: str) -> None:
    """argparse refused them as `caex`'s, pointing at `caex --help`, which does not list the command's options."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", expected + "\n")


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "DATA", "--out", "o", "--lr", "-1e-3"],
     "caex train: error: argument --lr: expected one argument; a value that starts with '-' is given as "
     "--lr=VALUE (see caex train --help)"),
    (["data", "show", "synthetic", "--out", "-g.png"],
     "caex data show: error: argument --out: expected one argument; a value that starts with '-' is given as "
     "--out=VALUE (see caex data show --help)"),
    (["data", "show", "synthetic", "--out"],  # no value at all: argparse's words say it
     "caex data show: error: argument --out: expected one argument (see caex data show --help)"),
    (["train", "DATA", "--out", "o", "--crit", "-1e-2"],  # an abbreviation argparse takes for --critic-noise
     "caex train: error: argument --critic-noise: expected one argument; a value that starts with '-' is given as "
     "--critic-noise=VALUE (see caex train --help)"),
    (["train", "DATA", "--lr", "--force", "--out", "o"],  # left out before the next flag: no value read as one
     "caex train: error: argument --lr: expected one argument (see caex train --help)"),
])
def test_a_value_read_as_a_flag_says_how_to_give_it(capsys, argv: list[str], expected: str) -> None:
    """argparse takes -1e-3 for a flag, and its own message sent users looking for the value they had typed."""
    assert main(argv) == 2
    assert capsys.readouterr().err == expected + "\n"


TINY_DATA = "synthetic:classes=2,per_class=4,size=32"


@pytest.mark.parametrize(("command", "extra", "expected"), [
    ("data", ["--size", "-5"], "argument --size: must be from 8 to 1024, got -5 (see caex data show --help)"),
    ("train", ["--size", "2000"], "argument --size: must be from 8 to 1024, got 2000 (see caex train --help)"),
    ("train", ["--lr", "nan"], "argument --lr: must be a positive finite number, got nan (see caex train --help)"),
    ("train-classifier", ["--lr", "-1"],
     "argument --lr: must be a positive finite number, got -1 (see caex train-classifier --help)"),
    ("train", ["--time-limit", "-5"],
     "argument --time-limit: must be a positive number of seconds, got -5 (see caex train --help)"),
    ("train", ["--ema", "2"], "argument --ema: must be in [0, 1) (0 keeps no average), got 2 (see caex train --help)"),
    ("train", ["--critic-noise", "nan"], "argument --critic-noise: must be in [0, 1), got nan (see caex train --help)"),
    ("train", ["--max-shift", "-1"], "argument --max-shift: must be at least 0, got -1 (see caex train --help)"),
    ("train", ["--loss", "adversarial=-1"], "--loss adversarial=-1: must be a finite number >= 0"),
    ("train", ["--model", "n_res=0"], "--model n_res=0: must be >= 1 (the class code reaches the decoder only "
                                      "through its AdaIN residual blocks)"),
    ("train", ["--model", "width=0"], "--model width=0: must be a whole number, at least 1"),
    ("train", ["--max-shift", "32"], "--max-shift 32: must be smaller than the 32px images"),
    ("train", ["--critic-noise", "0.1", "--dc", "discriminator"],
     "--critic-noise 0.1 noises what the classifier critic sees; it needs dc='classifier' (--dc classifier, with "
     "--classifier CLF; got 'discriminator')"),
])
def test_a_value_out_of_range_is_named_by_its_flag(capsys, tmp_path: Path, command: str, extra: list[str],
                                                   expected: str) -> None:
    """The library's checks named its fields (`size=-5`, `time_limit=-5.0`, `CAEConfig.n_res=0`), which the
    user never typed."""
    out = tmp_path / ("grid.png" if command == "data" else "out")
    head = ["data", "show"] if command == "data" else [command]
    assert main([*head, TINY_DATA, "--out", str(out), *(["--preset", "tiny"] if command == "train" else []),
                 *extra]) == 2
    prog = " ".join(head)
    assert capsys.readouterr().err == f"caex {prog}: error: {expected}\n"
    assert not out.exists()


def test_a_model_error_of_a_field_not_given_keeps_its_own_words(capsys, tmp_path: Path) -> None:
    """Only the fields --model set are renamed: the image size comes from the data (--size)."""
    assert main(["train", "synthetic:classes=2,per_class=4,size=48", "--out", str(tmp_path / "out"), "--preset",
                 "tiny", "--model", "n_down_individual=5"]) == 2
    assert capsys.readouterr().err.startswith("caex train: error: CAEConfig.image_size=48: must be divisible by "
                                              "2**n_down_individual=32")
    assert not (tmp_path / "out").exists()


def test_a_command_run_in_process_gives_back_what_it_set(monkeypatch, tmp_path: Path) -> None:
    """main() called from a notebook or a test left torch on --threads' count and the streams on caex's error
    handler."""
    import io

    import torch

    streams = {name: io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors=errors)
               for name, errors in (("stdout", "strict"), ("stderr", "backslashreplace"))}
    for name, stream in streams.items():
        monkeypatch.setattr(sys, name, stream)
    before = torch.get_num_threads()
    threads = 1 if before > 1 else 2
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert main(["demo", "--out", str(a_file), "--threads", str(threads)]) == 2
    assert torch.get_num_threads() == before
    assert (streams["stdout"].errors, streams["stderr"].errors) == ("strict", "backslashreplace")
    streams["stderr"].seek(0)
    assert "a_file" in streams["stderr"].read()


@pytest.mark.slow
def test_threads_are_given_back_where_torch_came_in_with_the_command(tmp_path: Path) -> None:
    """The count before a command was read only where torch was imported already: a notebook that had only done
    `import caex` stayed on --threads' count after main() returned."""
    code = ("import sys\n"
            "from caex.cli.main import main\n"
            "assert 'torch' not in sys.modules\n"
            f"print(main(['demo', '--out', {str(tmp_path / 'a_file')!r}, '--threads', '7']))\n"
            "import torch\n"
            "print(torch.get_num_threads() != 7)\n")
    (tmp_path / "a_file").write_text("")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout == "2\nTrue\n", done.stderr
