"""File names on file systems other than Linux's: NAS and OS metadata among the data, names Windows refuses, disks
that ignore case and Unicode form (macOS, Windows), symlinked and case-different spellings of one file, paths on two
Windows drives, and file-name length limits (eCryptfs: 143 bytes)."""

from __future__ import annotations

import json
import ntpath
import os
import types
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import caex
from caex.classifier import build_classifier_network, load_classifier, save_bundle
from caex.cli.common import check_output_folder
from caex.data.sources import image_tree, read_folder
from caex.errors import CaexError
from caex.explain import Explainer, explain_files
from caex.explain.files import EarlierOutputs, class_slugs, collect_images, unique_stems
from caex.model import CAE, CAEConfig
from caex.report import html as report_html
from caex.utils.io import folder_lock
from caex.utils.warn import warn

#: The untrained models rarely flip: said once per run, beside the point here.
UNFLIPPED = pytest.mark.filterwarnings("ignore:.*never reached the target class")
SIZE = 16
NFC_NAME, NFD_NAME = unicodedata.normalize("NFC", "é"), unicodedata.normalize("NFD", "é")


def save_image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (SIZE, SIZE), dtype=np.uint8)).save(path)
    return path


def make_explainer(root: Path, names: list[str]) -> Explainer:
    torch.manual_seed(0)
    cae = CAE(CAEConfig.preset("tiny", image_size=SIZE, channels=1, num_classes=len(names)), names)
    cae.set_train_codes(torch.randn(20, 8, generator=torch.Generator().manual_seed(1)), torch.arange(20) % len(names))
    net = build_classifier_network("smallcnn", channels=1, num_classes=len(names), image_size=SIZE)
    save_bundle(net, root / "clf", class_names=names, image_size=SIZE)
    return Explainer(cae, load_classifier(root / "clf", device="cpu"))


@pytest.fixture(scope="module")
def explainer(tmp_path_factory: pytest.TempPathFactory) -> Explainer:
    return make_explainer(tmp_path_factory.mktemp("names_models"), ["normal", "review"])


def test_nas_and_system_metadata_are_no_data(tmp_path: Path) -> None:
    """A Synology thumbnail (@eaDir/<img>/SYNOFILE_THUMB_M.jpg) was read as an image of its class, a macOS zip's
    __MACOSX/ became a class of no images, and Thumbs.db was named among the files not read."""
    root = tmp_path / "data"
    for name in ("cat", "dog"):
        save_image(root / name / "0.png")
    save_image(root / "dog" / "1.jpg")
    save_image(root / "cat" / "@eaDir" / "0.png" / "SYNOFILE_THUMB_M.jpg")
    (root / "cat" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "dog" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    save_image(root / "__MACOSX" / "cat" / "._0.png")
    save_image(root / "$RECYCLE.BIN" / "S-1-5" / "x.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left out is worth a word
        data = read_folder(root)
        assert image_tree(root / "cat") == [root / "cat" / "0.png"]
        assert collect_images([f"{root}/**/*.jpg"]) == [root / "dog" / "1.jpg"]
    assert data.class_names == ["cat", "dog"]
    assert data.train.sources == [str(root / name) for name in ("cat/0.png", "dog/0.png", "dog/1.jpg")]
    # an --out inside the inputs, where the NAS made thumbnails of the overlays, holds no inputs
    save_image(root / "cat" / "out" / "@eaDir" / "0_saliency.png" / "SYNOFILE_THUMB_M.jpg")
    assert collect_images([str(root / "cat")], out=root / "cat" / "out") == [root / "cat" / "0.png"]


@UNFLIPPED
def test_an_image_named_like_another_ones_target_output_is_done_already(explainer: Explainer, tmp_path: Path) -> None:
    """scan_to-review.json, scan_to-review.png's summary, was read as scan.png's toward a class review: a rerun with
    --skip-done explained scan.png again as scan-2."""
    images = [save_image(tmp_path / "in" / "scan.png"), save_image(tmp_path / "in" / "scan_to-review.png", 1)]
    out, settings = tmp_path / "out", {"steps": 2}
    first = explain_files(explainer, tmp_path / "in", out, settings=settings, steps=2, gif=False, skip_done=True)
    assert first.written == ["scan", "scan_to-review"]
    again = explain_files(explainer, tmp_path / "in", out, settings=settings, steps=2, gif=False, skip_done=True)
    assert (again.written, again.done_already) == ([], 2)
    # with --all-targets scan.png does write scan_to-review.json: another image's, so it goes under scan-2
    every = explain_files(explainer, images[0], out, steps=2, gif=False, all_targets=True)
    assert [stem.partition("_to-")[0] for stem in every.written] == ["scan-2"]


def test_image_names_become_file_names_on_every_system() -> None:
    """x:y.png, q?.png, a newline, a leading dot (hidden outputs) and Windows' device names (CON.json) went into
    output names as they were, where class names were made safe."""
    names = ["x:y", "x_y", "q?", "new\nline", ".hidden", "CON", "nul.tar", "Lpt1", "com9 .x", "com10", "CONSOLE"]
    assert unique_stems([Path(f"in/{name}.png") for name in names]) == [
        "x_y", "x_y-2", "q_", "new_line", "_hidden", "_CON", "_nul.tar", "_Lpt1", "_com9 .x", "com10", "CONSOLE"]
    assert class_slugs(["CON", "aux", "st:1", "con"]) == ["_CON-0", "_aux", "st_1", "_con-3"]


@UNFLIPPED
def test_one_file_through_a_symlinked_folder_is_done_already(explainer: Explainer, tmp_path: Path) -> None:
    """in5 explained, then In5 -> in5 with --skip-done: the sources were compared as strings, so every image was
    explained again under -2."""
    save_image(tmp_path / "in" / "p.png")
    (tmp_path / "alias").symlink_to(tmp_path / "in")
    out, settings = tmp_path / "out", {"steps": 2}
    explain_files(explainer, tmp_path / "in", out, settings=settings, steps=2, gif=False)
    again = explain_files(explainer, tmp_path / "alias", out, settings=settings, steps=2, gif=False, skip_done=True)
    assert (again.written, again.done_already) == ([], 1)
    assert explain_files(explainer, tmp_path / "alias", out, settings=settings, steps=2, gif=False).written == ["p"]


def test_an_out_inside_the_data_spelled_in_another_case_is_refused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """On a Mac's or Windows' disk --out Scans/x is inside the data folder scans, but resolve() keeps the case typed,
    so the names compared as outside it (simulated: the disk finds Scans as scans)."""
    (tmp_path / "scans" / "cat").mkdir(parents=True)

    typed, stored = f"{tmp_path}/Scans", f"{tmp_path}/scans"

    def ignoring_case(stat):
        def call(path, *args, **kwargs):
            return stat(path if isinstance(path, int) else os.fsdecode(path).replace(typed, stored), *args, **kwargs)
        return call

    monkeypatch.setattr(os, "stat", ignoring_case(os.stat))
    monkeypatch.setattr(os, "lstat", ignoring_case(os.lstat))
    with pytest.raises(CaexError, match="inside the data folder"):
        check_output_folder(str(tmp_path / "Scans" / "out"), str(tmp_path / "scans"))
    check_output_folder(str(tmp_path / "scans" / ".." / "out"), str(tmp_path / "scans"))  # beside it, not inside


def test_report_captions_of_images_on_two_windows_drives(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows, sources on D: and E: left no common folder, and relpath from the working folder on another drive
    raised ValueError: caex report crashed."""
    monkeypatch.setattr(report_html, "os", types.SimpleNamespace(path=ntpath))  # caex.report.html on Windows
    summaries = {"a": {"source": r"D:\scans\a.png", "caption": "cat, flips at step 3"},
                 "b": {"source": r"E:\more\b.png", "caption": "dog, flips at step 2"}}
    assert report_html._summary_titles(summaries) == {"a": r"D:\scans\a.png: cat, flips at step 3",
                                                      "b": r"E:\more\b.png: dog, flips at step 2"}
    one_drive = {"a": summaries["a"], "c": {"source": r"D:\x\c.png", "caption": "c"}}
    assert report_html._summary_titles(one_drive) == {"a": r"scans\a.png: cat, flips at step 3", "c": r"x\c.png: c"}


def test_names_differing_only_in_unicode_form_get_files_of_their_own(tmp_path: Path) -> None:
    """é.png typed (NFC) and é.png from a Mac (NFD) wrote é.json twice: one file on APFS, so the second image's
    results replaced the first's, in one run or the next."""
    first, second = Path(f"a/{NFC_NAME}.png"), Path(f"b/{NFD_NAME}.png")
    assert unique_stems([first, second]) == [NFC_NAME, f"{NFD_NAME}-2"]
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{NFC_NAME}.json").write_text(json.dumps({"source": str(tmp_path / first)}))  # an earlier run's
    assert unique_stems([tmp_path / second], EarlierOutputs(out)) == [f"{NFD_NAME}-2"]


def test_warnings_point_at_the_caller_when_caex_is_imported_through_a_symlink(tmp_path: Path) -> None:
    """PYTHONPATH=~/link (link -> the checkout): code objects name caex's files through the link while the package
    folder was resolved, so the warning pointed inside caex."""
    link = tmp_path / "link"
    link.symlink_to(Path(caex.__file__).parent)
    inside = compile("def helper():\n    warn('from inside caex')\n", str(link / "helper.py"), "exec")
    namespace = {"warn": warn}
    exec(inside, namespace)
    with pytest.warns(UserWarning, match="from inside caex") as record:
        namespace["helper"]()
    assert record[0].filename == __file__


@UNFLIPPED
def test_save_refuses_stems_that_are_no_file_name_of_their_own(explainer: Explainer, tmp_path: Path) -> None:
    """stems="../escaped" wrote outside out_dir, "sub/dir" made a folder, "A" and "a" are one file on a Mac, and a
    300-character stem raised OSError once the earlier images' files were written."""
    images = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    explanation = explainer.explain(images, steps=2)
    out = tmp_path / "out" / "inner"
    for stems, message in ((["q", "../escaped"], r"stem '\.\./escaped' is no file name"),
                           (["q", "sub/dir"], r"stem 'sub/dir' is no file name"),
                           (["A", "a"], r"stems 'A' and 'a' name one file on a Mac's or Windows' disk"),
                           ([NFC_NAME, NFD_NAME], "name one file"),
                           (["q", ".hid"], r"stem '\.hid' is no file name on every system .*; '_hid' is$"),
                           (["CON", "q"], r"stem 'CON' is no file name on every system .*; '_CON' is$"),
                           (["x:y", "q"], r"stem 'x:y' is no file name on every system .*; 'x_y' is$"),
                           (["", "q"], r"an empty stem is no file name$"),
                           (["q", "L" * 300], r"stem 'L+'\.\.\. is too long for a file name \(at most 116 UTF-8")):
        with pytest.raises(CaexError, match=message):
            explanation.save(images, out, stems=stems)
    assert not any(tmp_path.rglob("*.json")) and not out.exists()
    assert len(explanation.save(images, out, stems=["L" * 116, "a"])) == 2
    others = out / ".thesis.docx.ab12cd34.tmp"  # another program's, named like caex's leftovers and as old
    others.write_text("a backup")
    os.utime(others, (1, 1))
    explanation.save(images, out, stems=["d", "e"])
    assert others.exists()  # a folder of the caller's: not caex's to tidy
    # another writer of the folder: its maps and summaries stay its own
    with folder_lock(out, "caex explain"), pytest.raises(CaexError, match=r"inner: in use by caex explain \(pid "):
        explanation.save(images, out, stems=["b", "c"])
    assert not (out / "b.json").exists()


@UNFLIPPED
def test_the_longest_output_name_fits_ecryptfs(tmp_path: Path) -> None:
    """The longest output name was ~202 bytes, its temporary twin ~216: eCryptfs (an encrypted home folder) allows
    143 a name."""
    long_class = "c" * 200
    explainer = make_explainer(tmp_path, [long_class, "é" * 100])
    for folder in ("a", "b"):
        save_image(tmp_path / "in" / folder / f"{'é' * 120}.png")
    out = tmp_path / "out"
    result = explain_files(explainer, tmp_path / "in", out, steps=2, all_targets=True)
    assert len(result.written) == 2 and any("-2_to-" in stem for stem in result.written)
    longest = max(len(path.name.encode()) for path in out.iterdir())
    assert longest + len("..12345678.tmp") <= 143  # atomic writes: .<name>.<8 random>.tmp
