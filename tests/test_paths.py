"""File names and paths: earlier outputs kept, symlinked folders walked, spellings of one file, ``~``, odd names."""

from __future__ import annotations

import argparse
import json
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from caex.classifier import build_classifier_network, load_classifier, save_bundle
from caex.cli.common import user_path
from caex.cli.main import build_parser
from caex.data import load_dataset
from caex.data.sources import image_tree, read_folder
from caex.data.types import class_index
from caex.errors import CaexError
from caex.explain import Explainer, explain_files
from caex.explain.files import collect_images
from caex.model import CAE, CAEConfig

#: The untrained models rarely flip: said once per run, beside the point here.
UNFLIPPED = pytest.mark.filterwarnings("ignore:.*never reached the target class")
SIZE = 16
NAMES = ["normal", "lesion"]
NFC_NAME, NFD_NAME = unicodedata.normalize("NFC", "é 中文"), unicodedata.normalize("NFD", "é 中文")


def save_image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (SIZE, SIZE), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def explainer(tmp_path_factory: pytest.TempPathFactory) -> Explainer:
    root = tmp_path_factory.mktemp("paths_models")
    torch.manual_seed(0)
    cae = CAE(CAEConfig.preset("tiny", image_size=SIZE, channels=1, num_classes=2), NAMES)
    cae.set_train_codes(torch.randn(20, 8, generator=torch.Generator().manual_seed(1)), torch.arange(20) % 2)
    net = build_classifier_network("smallcnn", channels=1, num_classes=2, image_size=SIZE)
    save_bundle(net, root / "clf", class_names=NAMES, image_size=SIZE)
    return Explainer(cae, load_classifier(root / "clf", device="cpu"))


@UNFLIPPED
def test_an_earlier_runs_explanation_of_another_file_is_kept_and_found_again(explainer: Explainer,
                                                                            tmp_path: Path) -> None:
    """in/b/001.png overwrote in/a/001.png's explanation from an earlier run into the same --out, without a word."""
    first, second = save_image(tmp_path / "in" / "a" / "001.png"), save_image(tmp_path / "in" / "b" / "001.png", 1)
    out, settings = tmp_path / "out", {"steps": 2}
    assert explain_files(explainer, first, out, settings=settings, steps=2, gif=False).written == ["001"]
    assert explain_files(explainer, second, out, settings=settings, steps=2, gif=False).written == ["001-2"]
    assert json.loads((out / "001.json").read_text())["source"] == str(first)
    assert json.loads((out / "001-2.json").read_text())["source"] == str(second)
    again = explain_files(explainer, [first, second], out, settings=settings, steps=2, gif=False, skip_done=True)
    assert (again.written, again.done_already) == ([], 2)
    rerun = explain_files(explainer, [second], out, settings=settings, steps=2, gif=False)
    assert rerun.written == ["001-2"]  # its own earlier stem, rewritten in place


@UNFLIPPED
def test_a_folder_whose_summaries_name_their_images_as_typed_is_rerun_in_place(
        explainer: Explainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """caex before 882a651 recorded "in/001.png" as typed: a rerun after the upgrade took it for another file's
    explanation and wrote every image again as "001-2", even with --skip-done."""
    monkeypatch.chdir(tmp_path)
    image, out, settings = save_image(tmp_path / "in" / "001.png"), tmp_path / "out", {"steps": 2}
    explain_files(explainer, image, out, settings=settings, steps=2, gif=False)
    summary = json.loads((out / "001.json").read_text())
    (out / "001.json").write_text(json.dumps({**summary, "source": "in/001.png"}))  # as the older caex wrote it
    again = explain_files(explainer, image, out, settings=settings, steps=2, gif=False, skip_done=True)
    assert (again.written, again.done_already) == ([], 1)
    assert explain_files(explainer, image, out, settings=settings, steps=2, gif=False).written == ["001"]
    assert sorted(path.name for path in out.glob("*.json")) == ["001.json"]


@UNFLIPPED
def test_a_summary_of_another_tool_is_not_written_over(explainer: Explainer, tmp_path: Path) -> None:
    image = save_image(tmp_path / "x.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.json").write_text('{"shapes": []}')  # a LabelMe file, say
    assert explain_files(explainer, image, tmp_path / "out", steps=2, gif=False).written == ["x-2"]
    assert (tmp_path / "out" / "x.json").read_text() == '{"shapes": []}'


def test_symlinked_sub_folders_are_walked_once_and_a_loop_ends(tmp_path: Path) -> None:
    """Path.rglob did not follow a class folder's symlinked sub-folders: their images were left out."""
    save_image(tmp_path / "store" / "p1" / "b.png")
    save_image(tmp_path / "cls" / "a.png")
    (tmp_path / "cls" / "linked").symlink_to(tmp_path / "store" / "p1", target_is_directory=True)
    (tmp_path / "cls" / "loop").symlink_to(tmp_path / "cls", target_is_directory=True)
    (tmp_path / "cls" / "twice").symlink_to(tmp_path / "store" / "p1", target_is_directory=True)
    assert image_tree(tmp_path / "cls") == [tmp_path / "cls" / "a.png", tmp_path / "cls" / "linked" / "b.png"]


def test_a_hidden_name_of_a_folder_does_not_hide_it(tmp_path: Path) -> None:
    """A link .cache -> p1 sorted first, claimed the folder, and was then left out as hidden: the class lost p1."""
    save_image(tmp_path / "cls" / "p1" / "a.png")
    (tmp_path / "cls" / ".cache").symlink_to(tmp_path / "cls" / "p1", target_is_directory=True)
    assert image_tree(tmp_path / "cls") == [tmp_path / "cls" / "p1" / "a.png"]


def test_a_link_into_another_class_or_split_is_not_followed(tmp_path: Path) -> None:
    """B/linkA -> A read A's images as B's too, and a test class linking into train leaked training images."""
    for split in ("train", "test"):
        for name in ("A", "B"):
            for index in range(2):
                save_image(tmp_path / split / name / f"{index}.png")
    (tmp_path / "train" / "B" / "linkA").symlink_to(tmp_path / "train" / "A", target_is_directory=True)
    (tmp_path / "test" / "A" / "train_copy").symlink_to(tmp_path / "train" / "A", target_is_directory=True)
    with pytest.warns(UserWarning) as caught:
        data = load_dataset(str(tmp_path), size=8)
    assert data.train.labels.tolist() == [0, 0, 1, 1] and data.test.labels.tolist() == [0, 0, 1, 1]
    assert [str(w.message) for w in caught] == [
        f"{tmp_path / 'train' / 'B'}: 1 linked sub-folder(s) lead back above it or into another class or split of the "
        f"data and are not read (first: {tmp_path / 'train' / 'B' / 'linkA'}); their images would be read twice or "
        "under two labels",
        f"{tmp_path / 'test' / 'A'}: 1 linked sub-folder(s) lead back above it or into another class or split of the "
        f"data and are not read (first: {tmp_path / 'test' / 'A' / 'train_copy'}); their images would be read twice "
        "or under two labels"]


def test_a_link_to_a_folder_above_is_not_followed(tmp_path: Path) -> None:
    """cnv/parent -> .. read every class's images as cnv's too, in train and test, without a word."""
    save_image(tmp_path / "data" / "normal" / "a.png")
    save_image(tmp_path / "data" / "cnv" / "b.png")
    (tmp_path / "data" / "cnv" / "parent").symlink_to(tmp_path / "data", target_is_directory=True)
    with pytest.warns(UserWarning, match=r"^.*/cnv: 1 linked sub-folder\(s\) lead back to it or above it and are not "
                                         r"read \(first: .*/cnv/parent\); their images would be read twice$"):
        assert image_tree(tmp_path / "data" / "cnv") == [tmp_path / "data" / "cnv" / "b.png"]


def test_an_output_folder_holding_input_images_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--out A beside '*/img0.png' skipped A/img0.png as an output and wrote B/img0.png's explanation beside it."""
    monkeypatch.chdir(tmp_path)
    held = save_image(tmp_path / "A" / "img0.png")
    save_image(tmp_path / "B" / "img0.png")
    save_image(tmp_path / "A" / "x_saliency.png")  # a figure of an earlier run: no input
    for pattern in ("*/img0.png", "."):
        with pytest.raises(CaexError, match=r"^output folder A: holds the input file (/.*/)?A/img0\.png; "):
            collect_images([pattern], out="A")
    held.unlink()
    assert collect_images(["*/img0.png"], out="A") == [Path("B/img0.png")]
    for name in ("x.json", "x_saliency.npy", "x_path.gif"):  # the rest of an earlier run's outputs: no inputs
        (tmp_path / "A" / name).write_bytes(b"")
    assert collect_images(["**/*"], out="A") == [Path("B/img0.png")]


def test_links_are_judged_by_the_class_folders_they_lead_into(tmp_path: Path) -> None:
    """Linked class folders (a -> store/a) whose sub-folder linked to another (store/a/dup -> store/b) read b's
    images as a's too; a link to a store inside the data root that is no class (.pool) was refused."""
    for name, count in (("a", 2), ("b", 3), (".pool/extra", 1)):
        for index in range(count):
            save_image(tmp_path / "store" / name / f"{index}.png")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a", "b"):
        (data / name).symlink_to(tmp_path / "store" / name, target_is_directory=True)
    (tmp_path / "store" / "a" / "dup").symlink_to(tmp_path / "store" / "b", target_is_directory=True)
    (tmp_path / "store" / "b" / "extra").symlink_to(tmp_path / "store" / ".pool" / "extra", target_is_directory=True)
    with pytest.warns(UserWarning, match=r"^.*/data/a: 1 linked sub-folder\(s\) lead back above it or into another "
                                         r"class or split of the data and are not read"):
        raw = read_folder(data, size=8)
    assert raw.train.labels.tolist() == [0, 0, 1, 1, 1, 1]  # b's own 3 and its linked extra; a's 2, not b's


def test_a_test_class_folder_named_twice_in_two_unicode_forms_is_refused(tmp_path: Path) -> None:
    """test/ held é in NFC and in NFD: one of the two folders was silently left out."""
    for split, names in (("train", ["é", "x"]), ("test", ["é", unicodedata.normalize("NFD", "é"), "x"])):
        for name in names:
            save_image(tmp_path / split / name / "0.png")
    with pytest.raises(CaexError, match=r"/test: class name 'é' is given twice in class_names \(as "):
        read_folder(tmp_path, size=8)


def test_a_folder_named_like_a_built_in_data_set_is_named_in_a_warning(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("digits", size=8)  # no folder: nothing to say
    (tmp_path / "digits").mkdir()
    with pytest.warns(UserWarning, match=r"^digits is the built-in data set; to load the folder \./digits write "
                                         r"\./digits$"):
        assert load_dataset("digits", size=8).num_classes == 10


def test_files_and_globs_inside_the_output_folder_are_refused_as_folders_are(tmp_path: Path) -> None:
    """self/*.png --out self was accepted (the shell's expansion) or said "no files match" (a quoted glob)."""
    image = save_image(tmp_path / "self" / "a.png")
    out = str(tmp_path / "self")
    with pytest.raises(CaexError, match=rf"^output folder {out}: holds the input file {image}; its results would be "
                                        r"mixed with the images \(and explained by a rerun\); choose another$"):
        collect_images([str(image)], out=out)
    with pytest.raises(CaexError, match=rf"^output folder {out}: holds the input file {image}; its results"):
        collect_images([f"{out}/*.png"], out=out)


def test_a_folder_walk_names_the_files_of_formats_it_does_not_read(tmp_path: Path) -> None:
    """.webp, .gif and .jfif are explained when named, but a folder walk dropped them without a word."""
    for name, kind in (("a.webp", "WEBP"), ("b.gif", "GIF"), ("c.png", "PNG"), ("d.jfif", "JPEG")):
        Image.new("L", (SIZE, SIZE)).save(tmp_path / name, format=kind)
    with pytest.warns(UserWarning, match=rf"^{tmp_path}: 3 file\(s\) under it are not read \(\.gif, \.jfif, \.webp; "
                                         r"caex reads \.bmp, \.jpeg, \.jpg, \.png, \.tif, \.tiff\); name other image "
                                         rf"files, or a glob of them, to explain them; first: {tmp_path}/a\.webp$"):
        assert collect_images([str(tmp_path)]) == [tmp_path / "c.png"]


def test_a_data_folder_walk_names_unread_files_without_explains_advice(tmp_path: Path) -> None:
    """image_tree, in the data layer, told every caller to "name other image files ... to explain them"."""
    Image.new("L", (SIZE, SIZE)).save(tmp_path / "a.webp", format="WEBP")
    save_image(tmp_path / "b.png")
    with pytest.warns(UserWarning, match=rf"^{tmp_path}: 1 file\(s\) under it are not read \(\.webp; caex reads "
                                         r"\.bmp, \.jpeg, \.jpg, \.png, \.tif, \.tiff\); first: "
                                         rf"{tmp_path}/a\.webp$"):
        assert image_tree(tmp_path) == [tmp_path / "b.png"]


def test_one_file_spelled_three_ways_is_explained_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_image(tmp_path / "x.png")
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path)
    assert collect_images(["x.png", str(tmp_path / "x.png"), "a/../x.png"]) == [Path("x.png")]


def test_a_class_name_matches_in_either_unicode_form(tmp_path: Path) -> None:
    """A macOS folder name (NFD) was "not a class of this model" when typed (NFC), and the reverse."""
    assert class_index(NFC_NAME, ["normal", NFD_NAME]) == 1
    assert class_index(NFD_NAME, ["normal", NFC_NAME]) == 1
    for split, name in (("train", NFC_NAME), ("test", NFD_NAME)):
        for label, folder in enumerate(("normal", name)):
            for index in range(2):
                save_image(tmp_path / split / folder / f"{index}.png", label * 2 + index)
    bundle = load_dataset(str(tmp_path), size=8)
    assert bundle.class_names == ["normal", NFC_NAME] and bundle.test.class_counts(2) == [2, 2]


def test_every_path_argument_expands_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--out=~/g and a quoted '~/x.png' reach caex as typed: a folder named ~ was made, a file not found."""
    monkeypatch.setenv("HOME", str(tmp_path))
    parser = build_parser()
    args = parser.parse_args(["explain", "~/run", "~/x.png", "~/s/*.png", "--classifier=~/clf", "--out=~/o",
                              "--reference", "~/r.png"])
    assert (args.run, args.images, args.classifier, args.out, args.reference) == (
        f"{tmp_path}/run", [f"{tmp_path}/x.png", f"{tmp_path}/s/*.png"], f"{tmp_path}/clf", f"{tmp_path}/o",
        f"{tmp_path}/r.png")
    args = parser.parse_args(["data", "show", "~/data", "--out=~/g.png"])
    assert (args.data, args.out) == (f"{tmp_path}/data", f"{tmp_path}/g.png")
    assert parser.parse_args(["data", "show", "synthetic:classes=2", "--out", "g.png"]).data == "synthetic:classes=2"


def test_a_glob_through_a_folder_with_brackets_says_why_nothing_matches(tmp_path: Path) -> None:
    save_image(tmp_path / "batch [2024]" / "a.png")
    pattern = str(tmp_path / "batch [2024]" / "*.png")
    with pytest.raises(CaexError, match=r"^.*/batch \[2024\]/\*\.png: no files match this pattern; \[ and \] are glob "
                                        r"characters: give the folder, or write \[\[\] for \[$"):
        collect_images([pattern])
    with pytest.raises(CaexError, match=r"^.*/\*\.jpg: no files match this pattern$"):
        collect_images([str(tmp_path / "batch [2024]" / "*.jpg")])
    assert collect_images([str(tmp_path / "batch [[]2024]" / "*.png")]) == [tmp_path / "batch [2024]" / "a.png"]


def test_every_path_argument_of_every_command_expands_the_home_folder() -> None:
    """The CLI's path arguments are named by their metavars; each one must go through user_path."""
    path_metavars = {"RUN", "DIR", "FILE", "FILE.png", "CLF", "OUT", "DATA", "IMAGES", "IMG"}

    def path_actions(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += [(f"{name} {where}", found_action) for where, found_action in path_actions(sub)]
            elif action.metavar in path_metavars:
                found.append((action.dest, action))
        return found

    actions = path_actions(build_parser())
    assert len(actions) >= 25  # every command has its RUN/DATA/--out; report has six
    assert [where for where, action in actions if action.type is not user_path] == []
