"""``caex data show`` and the one-line errors every bad data input must give."""

from __future__ import annotations

import errno
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from caex.cli.main import main


def test_data_show_prints_counts_and_writes_a_png(tmp_path, capsys):
    out = tmp_path / "grid" / "synthetic.png"
    code = main(["data", "show", "synthetic:per_class=5,size=32", "--out", str(out), "--per-class", "3"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "32x32, 1 channel(s)" in printed and "lesion masks: yes" in printed
    for name in ("normal", "cnv", "dme", "drusen"):
        assert any(line.split() == [name, "4", "1"] for line in printed.splitlines())
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG" and image.width > 200 and image.height > 200
        pixels = np.asarray(image.convert("RGB")).astype(int)
    green = (pixels[..., 1] > 200) & (pixels[..., 0] < 80) & (pixels[..., 2] < 80)
    assert green.sum() > 20  # lesion outlines are drawn (in the gallery's green, which red lesions do not hide)


def _folder(root, classes):
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("L", (8, 8), 40 * i).save(root / name / f"{i}.png")
    return root


def _corrupt(tmp_path):
    root = _folder(tmp_path / "corrupt", {"a": 2, "b": 2})
    (root / "b" / "bad.png").write_bytes(b"\x89PNG garbage")
    return str(root)


def _float_tiff_folder(root):
    """Two classes of 32-bit float TIFFs holding 0..255 values, which read_image clamped to white."""
    for name in ("a", "b"):
        (root / "tiffs" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 200.0, dtype=np.float32), mode="F").save(root / "tiffs" / name / f"{i}.tif")
    return root / "tiffs"


def _text(path):
    path.write_text("not an archive")
    return path


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


BAD_INPUTS = {
    "unknown spec": (lambda tmp: ["imagenet"], "unknown data spec 'imagenet': not a built-in source"),
    "missing path": (lambda tmp: [str(tmp / "nowhere" / "x.npz")], "x.npz: no such file or folder"),
    "corrupt image": (lambda tmp: [_corrupt(tmp)], "bad.png: cannot read image"),
    "empty class folder": (lambda tmp: [str(_folder(tmp / "empty", {"a": 2, "b": 0}))],
                           "/b: class folder has no images"),
    "one class": (lambda tmp: [str(_folder(tmp / "one", {"a": 3}))], "need at least two class folders, found a"),
    "npz missing key": (lambda tmp: [_npz(tmp, train_images=np.zeros((4, 8, 8), np.uint8))],
                        "data.npz: missing array 'train_labels'"),
    "npz label length": (lambda tmp: [_npz(tmp, train_images=np.zeros((4, 8, 8), np.uint8),
                                           train_labels=np.array([0, 1, 0]))],
                         "train_images has 4 images but train_labels has 3"),
    "npz one class": (lambda tmp: [_npz(tmp, train_images=np.zeros((4, 8, 8), np.uint8),
                                        train_labels=np.zeros(4, np.int64))],
                      "needs at least two classes with images, found only 1: 0"),
    "one mnist digit": (lambda tmp: ["mnist:4"], "needs at least two classes with images, found only 1: 4"),
    "text named .npz": (lambda tmp: [str(_text(tmp / "notes.npz"))], "notes.npz: not a .npz file (a .npz is a zip"),
    "size out of range": (lambda tmp: ["digits", "--size", "4"], "argument --size: must be from 8 to 1024, got 4"),
    "synthetic size out of range": (lambda tmp: ["synthetic", "--size", "512"], "images of 512 px are out of range"),
    "unknown mnist digit": (lambda tmp: ["mnist:4,11"], "unknown digit 11"),
    "bad mnist selection": (lambda tmp: ["mnist:four"], "classes must be digits 0-9"),
    "unknown synthetic option": (lambda tmp: ["synthetic:clases=3"], "unknown option 'clases'"),
    "synthetic option twice": (lambda tmp: ["synthetic:classes=2,classes=3"], "option 'classes' is given twice"),
    "empty mnist digit": (lambda tmp: ["mnist:4,,9"], "classes must be digits 0-9 separated by commas"),
    "float tiff in 0..255": (lambda tmp: [str(_float_tiff_folder(tmp))], "float pixels must be in [0, 1]"),
    "npz float 0-255": (lambda tmp: [_npz(tmp, train_images=np.full((4, 8, 8), 255.0),
                                          train_labels=np.array([0, 1, 0, 1]))], "float pixels must be in [0, 1]"),
    "empty spec": (lambda tmp: [""], "empty data spec"),
    "train without test": (lambda tmp: [str(_folder(tmp / "split" / "train", {"a": 2, "b": 2}).parent)],
                           "has train/ but no test/"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_non_zero_exit(case, tmp_path, capsys):
    make_args, expected = BAD_INPUTS[case]
    code = main(["data", "show", *make_args(tmp_path), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("caex data show: error: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_skip_bad_from_the_command_line(tmp_path, capsys):
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        code = main(["data", "show", _corrupt(tmp_path), "--skip-bad", "--out", str(tmp_path / "g.png")])
    assert code == 0 and (tmp_path / "g.png").exists()


def test_out_that_is_a_folder_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("caex.data.load_dataset", lambda *a, **k: pytest.fail("loaded the data first"))
    assert main(["data", "show", "digits", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("caex data show: error: --out") and "is a folder" in err and err.count("\n") == 1


def test_an_output_path_under_a_file_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    target = tmp_path / "notes.txt" / "grid.png"
    assert main(["data", "show", "synthetic:classes=2,per_class=4", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err == f"caex data show: error: --out {target}: {tmp_path / 'notes.txt'} is a file, not a folder\n"


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    """The failed write names no file, so it came out as an 'unexpected error' with exit code 1."""
    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    target = tmp_path / "grid.png"
    assert main(["data", "show", "synthetic:classes=2,per_class=4", "--out", str(target)]) == 2
    assert capsys.readouterr().err == f"caex data show: error: {target}: No space left on device\n"
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_ctrl_c_while_the_commands_load_is_one_line(capsys, monkeypatch):
    """Building the parser imports torch (seconds); Ctrl-C then printed a raw traceback."""
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr("caex.cli.main.build_parser", interrupted)
    assert main(["data", "show", "digits", "--out", "grid.png"]) == 130
    assert capsys.readouterr().err == "caex: interrupted\n"


def test_sigterm_while_the_commands_load_is_one_line(capsys, monkeypatch):
    """SIGTERM in the seconds that import torch ended the program with 143 and not a word."""
    import signal

    def terminated():
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr("caex.cli.main.build_parser", terminated)
    assert main(["data", "show", "digits", "--out", "grid.png"]) == 143
    assert capsys.readouterr().err == "caex: stopped by SIGTERM\n"


def test_preview_draws_class_names_with_dollar_signs_literally(tiny_synthetic, tmp_path):
    """Matplotlib parsed ``$...$`` in a class name as math text and raised ValueError on what is not valid TeX."""
    import dataclasses

    from caex.data import save_preview

    names = [rf"$\nosuch$ {index}" for index in range(tiny_synthetic.num_classes)]
    save_preview(dataclasses.replace(tiny_synthetic, class_names=names, spec="$5 a"), tmp_path / "grid.png",
                 per_class=2)
    with Image.open(tmp_path / "grid.png") as image:
        assert image.format == "PNG"


def test_preview_leaves_the_matplotlib_backend_alone(tiny_synthetic, tmp_path):
    """A library call must not switch a notebook's backend to Agg (the other figures use no pyplot either)."""
    import matplotlib

    from caex.data import save_preview

    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        save_preview(tiny_synthetic, tmp_path / "grid.png", per_class=2)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous)
    with Image.open(tmp_path / "grid.png") as image:
        assert image.format == "PNG"


@pytest.mark.slow
def test_warnings_print_as_one_line_naming_the_command(tmp_path):
    """Run as users run it (pytest records warnings itself, so only a real process shows the format). The command is
    named as its usage errors name it, "caex data show" (its warnings and errors said "caex data")."""
    path = tmp_path / "gap.npz"
    np.savez(path, train_images=np.zeros((8, 10, 10), np.uint8), train_labels=(np.arange(8) % 2) * 2)
    done = subprocess.run([sys.executable, "-m", "caex.cli.main", "data", "show", str(path), "--out",
                           str(tmp_path / "grid.png")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    warning_lines = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    assert warning_lines == [f"caex data show: warning: {path}: class(es) 1 have no training images; "
                             "nothing can be learned or explained about them"]


def test_size_help_states_every_sources_real_default(capsys):
    """It said "the source's own", but a folder of any size becomes 64 px and MNIST 28 px unless told otherwise."""
    from caex.data.spec import DEFAULT_SIZES
    from caex.data.synthetic import SyntheticConfig

    with pytest.raises(SystemExit):
        main(["data", "show", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    expected = {"synthetic": SyntheticConfig().size, "folders": DEFAULT_SIZES["folder"],
                "mnist": DEFAULT_SIZES["mnist"], "digits": DEFAULT_SIZES["digits"]}
    assert "(default: 64 for synthetic and folders, 28 for mnist, 32 for digits, a .npz file's own)" in text
    assert expected == {"synthetic": 64, "folders": 64, "mnist": 28, "digits": 32} and DEFAULT_SIZES["npz"] is None


def test_out_that_is_not_a_png_is_refused_and_a_wide_grid_is_cut_to_the_largest_class(tmp_path, capsys):
    """data show wrote PNG bytes under any name (over an input .jpg, say), and --per-class 100000 drew for
    minutes a grid of empty columns."""
    (tmp_path / "scan.jpg").write_bytes(b"keep")
    assert main(["data", "show", "digits", "--out", str(tmp_path / "scan.jpg")]) == 2
    assert "--out " in capsys.readouterr().err and (tmp_path / "scan.jpg").read_bytes() == b"keep"
    out = tmp_path / "grid.png"
    assert main(["data", "show", _folder(tmp_path / "small", {"a": 2, "b": 3}).as_posix(), "--size", "8",
                 "--per-class", "100000", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.width < 1000  # 3 columns (the largest class has 2 or 3 training images), not 100,000


def test_debug_is_accepted_after_the_command_too(tmp_path):
    """The one-line errors say 'rerun with --debug', and users add it at the end; argparse refused it there."""
    from caex.errors import DataError

    for argv in (["--debug", "data", "show", "nosuch"], ["data", "show", "nosuch", "--debug"]):
        with pytest.raises(DataError, match="unknown data spec 'nosuch'"):
            main([*argv, "--out", str(tmp_path / "x.png")])


@pytest.mark.parametrize("argv", [["data", "show", "DATA", "--out", "OUT.png"],
                                  ["train-classifier", "DATA", "--arch", "smallcnn", "--out", "OUT"],
                                  ["train", "DATA", "--preset", "tiny", "--out", "OUT"],
                                  ["evaluate", "none", "DATA", "--classifier", "c", "--out", "OUT"],
                                  ["manifold", "run", "DATA", "--classifier", "clf", "--out", "OUT"]])
def test_an_output_inside_the_data_folder_is_refused_before_any_work(argv, make_image_folder, capsys):
    """evaluate --out DATA/ev made ev a third class of the data (its curves and gallery its images, turning the
    set to RGB); every later command trained and tested on it."""
    root = make_image_folder({"a": 4, "b": 4}, size=(16, 16))
    out = root / "a" / "results"
    argv = [str(root) if arg == "DATA" else str(out) + arg[3:] if arg.startswith("OUT") else arg for arg in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and f"--out {out}" in err and f": inside the data folder {root}, whose images would" in err, err
    assert sorted(path.name for path in (root / "a").iterdir()) == [f"{i}.png" for i in range(4)]


@pytest.mark.slow
def test_a_reader_that_leaves_early_ends_quietly_with_the_grid_written(tmp_path):
    """`caex data show DATA --out g.png | head -1` ended in 'unexpected error: BrokenPipeError', at times with no
    PNG written."""
    out = tmp_path / "grid.png"
    command = (f"{sys.executable} -m caex.cli.main data show synthetic:classes=2,per_class=4 --size 32 --out {out} "
               "| true")  # a reader gone before the first line, as head is soon after it
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.stderr == "" and out.is_file()


@pytest.mark.parametrize("errors", ["strict", "surrogateescape"])  # the latter is the C locale's
def test_an_ascii_only_stdout_shows_what_it_cannot_encode_as_question_marks(make_image_folder, monkeypatch,
                                                                            capsys, errors):
    """With LC_ALL=C, caex evaluate wrote its files and then failed with UnicodeEncodeError on '↑'."""
    import io

    root = make_image_folder({"normal": 3, "ödem": 3}, size=(12, 12))
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors=errors)
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["data", "show", str(root), "--out", str(root.parent / "grid.png")]) == 0
    stdout.flush()
    assert "  ?dem  " in stdout.buffer.getvalue().decode("ascii")


def test_a_warning_made_an_error_is_a_one_line_error(make_image_folder, capsys):
    """Under PYTHONWARNINGS=error a caex warning ended as 'unexpected error: UserWarning: ...', exit 1."""
    import warnings

    root = make_image_folder({"a": 3, "b": 3}, size=(12, 12))
    make_image_folder({"masks": 1}, size=(12, 12), root=root / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = main(["data", "show", str(root), "--out", str(root.parent / "grid.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"caex data show: error: {root / 'a'}: 1 file(s) in sub-folders named like "
                                        "masks") and err.count("\n") == 1, err
