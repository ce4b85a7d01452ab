"""Arguments several commands share, so they read the same everywhere."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caex.utils.warn import warn

if TYPE_CHECKING:
    import torch

    from caex.classifier import Classifier
    from caex.data import DataBundle
    from caex.errors import CaexError


def add_data_arguments(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    """DATA spec plus the options that shape how it is loaded."""
    from caex.data.spec import SIZE_RANGE, SPEC_FORMS

    if positional:
        parser.add_argument("data", metavar="DATA", type=user_path, help=f"data spec: {SPEC_FORMS}")
    parser.add_argument("--size", type=at_least(SIZE_RANGE[0], at_most=SIZE_RANGE[1]), default=None,
                        help="side of the square images in pixels; others are resized and centre-cropped (default: "
                             "64 for synthetic and folders, 28 for mnist, 32 for digits, a .npz file's own)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=None,
                        help="force 1 (grayscale) or 3 (RGB) channels (default: detected)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable images with a warning instead of stopping")
    parser.add_argument("--split-seed", type=seed_number, default=0,
                        help="seed of the train/test split (and of the synthetic images); keep it the same for "
                             "every command on one data set, as the models record it (default: 0)")


def user_path(text: str) -> str:
    """The argparse ``type`` of every path argument: ``~`` expanded once here, since the shell leaves it as typed
    in ``--out=~/x`` or a quoted ``'~/scans/*.png'`` (a folder named ``~`` was created, a file not found)."""
    return os.path.expanduser(text)


class _ExamplesFormatter(argparse.HelpFormatter):
    """argparse's help, with an "examples:" epilog kept line by line (the default would run its commands together)
    while the description is still wrapped to the terminal."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def with_examples(*commands: str) -> dict[str, Any]:
    """``add_parser`` keywords for a help that ends with runnable ``commands`` (one a line, as ``caex evaluate``'s)."""
    return {"epilog": "examples:\n" + "".join(f"  {command}\n" for command in commands),
            "formatter_class": _ExamplesFormatter}


def add_seed_argument(parser: argparse.ArgumentParser, default: int = 0) -> None:
    parser.add_argument("--seed", type=seed_number, default=default, help=f"random seed (default: {default})")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default: auto)")


def at_least(minimum: int, *, at_most: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number no smaller than ``minimum`` (nor larger than ``at_most``), refused
    while parsing, before any work, with one message format for every count option."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if at_most is not None and not minimum <= value <= at_most:
            raise argparse.ArgumentTypeError(f"must be from {minimum} to {at_most}, got {value}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def number(requirement: str, accepts: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse ``type``: a number that ``accepts`` takes (NaN passes no comparison), else "must be
    ``requirement``", refused while parsing and named by its flag, where the library's check of the setting named
    its field (``lr=nan``), some only after the data had loaded."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    return parse


#: A learning rate: NaN or inf trained to NaN weights (``--lr``).
positive_finite = number("a positive finite number", lambda value: 0 < value < math.inf)
#: A share of the image (``--share``): 0 selects nothing, and 5 or 10, read as a percentage, the whole image.
image_share = number("in (0, 1]", lambda value: 0 < value <= 1)
#: A Gaussian blur's sigma in pixels (``--smoothing``).
blur_sigma = number("0 (off) or a positive finite sigma in pixels", lambda value: 0 <= value < math.inf)


def seed_number(text: str) -> int:
    """An argparse ``type`` for ``--seed`` and ``--split-seed``: numpy refused a negative seed and torch one past 64
    bits as "unexpected errors", after the data had loaded; here both are refused while parsing."""
    from caex.utils.checks import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {MAX_SEED}, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {MAX_SEED}, got {value}")
    return value


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=at_least(1), default=None,
                        help="CPU threads for torch (default: torch's own; 1 is often fastest for small models on busy "
                             "machines; a seed gives the same weights only with the same thread count)")


@contextmanager
def threads_set(threads: int | None) -> Iterator[None]:
    """Apply ``--threads`` (parsed by :func:`at_least`: torch would take 0 or -1 without a word) while a command
    runs, and give the count before back after it (:func:`caex.cli.main.main` may run in a notebook's process); the
    CLI does it for every command that takes the option, before the command's work."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def add_classifier_arguments(parser: argparse.ArgumentParser, *, required: bool, help: str) -> None:
    """``--classifier CLF`` and the ``--arch`` that a bare weights file needs, the same in every command."""
    parser.add_argument("--classifier", metavar="CLF", type=user_path, required=required, default=None, help=help)
    parser.add_argument("--arch", default=None,
                        help="architecture of a weights file given as --classifier (.safetensors, .pt, .pth), e.g. "
                             "resnet18 (default: from the classifier.json beside it)")


def load_classifier_from_args(args: argparse.Namespace, *, image_size: int, channels: int,
                              device: torch.device | str) -> Classifier:
    """Open ``--classifier`` (with ``--arch``) for images of ``image_size`` px and ``channels`` channels.

    A model file with no ``classifier.json`` beside it records no input shape, so it is probed with the
    images it will be given; the class count that probe finds is then checked against the data or the CAE.
    """
    from caex.classifier import load_classifier

    return load_classifier(args.classifier, arch=args.arch, device=device, probe_shape=(image_size, channels))


@contextmanager
def named_by_flags(flags: dict[str, str], *errors: type[CaexError]) -> Iterator[None]:
    """``errors`` raised in the library's words (``CAEConfig.n_res=0: ...``, ``max_shift=32: ...``,
    ``patch=64: ...``) in the words the user typed (``--model n_res=0: ...``, ``--max-shift 32: ...``); ``flags``
    maps each field prefix of a setting the user gave to its flag, so a setting that came from the preset or the
    data keeps its own name; a message that names the flag already (``dc='classifier' (--dc classifier) needs
    ...``) is left as it is."""
    try:
        yield
    except errors as exc:
        message = str(exc)
        prefix = next((prefix for prefix in flags if message.startswith(prefix)), None)
        if prefix is None or f"{flags[prefix].split()[0]} " in message:
            raise
        raise type(exc)(flags[prefix] + message.removeprefix(prefix)) from exc


def check_output_folder(out: str, data: str | None = None, *, is_file: bool = False,
                        results: bool = False) -> None:
    """Refuse an ``--out`` folder (or, ``is_file``, the folder of an output file) that cannot be created, or that
    lies inside the DATA folder ``data``, before any work, so no finished result is lost to it.

    ``results``: the command writes results (summary.json, <image>.json, ...) whose names a model's own files
    share, so a CAE run folder or a classifier bundle folder as ``--out`` is refused too (the model would be
    overwritten and stop loading, or a run's summary replaced by the results')."""
    from caex.errors import CaexError
    from caex.utils.io import check_not_in_use

    data_root = None if data is None else Path(data)
    if data_root is not None and data_root.is_dir() and _lies_in(Path(out), data_root):
        # its figures would be read as images of a class (or a new class) by every later command
        raise CaexError(f"--out {out}: inside the data folder {data}, whose images would then include this "
                        "command's outputs; choose an --out outside it")
    if not is_file:
        check_not_in_use(out)  # now, not minutes later when the command, its data loaded, takes the lock
    model = model_folder_kind(Path(out)) if results else None
    if model is not None:
        raise CaexError(f"--out {out}: is a {model} folder, whose files this command's results could overwrite; "
                        "choose an --out of its own (e.g. a sub-folder)")
    for folder in Path(out).parents if is_file else (Path(out), *Path(out).parents):
        if folder.exists():
            if not folder.is_dir():
                raise CaexError(f"--out {out}: {folder} is a file, not a folder")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise CaexError(f"--out {out}: {folder} is not writable")
            return


def _lies_in(path: Path, folder: Path) -> bool:
    """Whether ``path`` is the existing ``folder`` or lies inside it, told by the file system, not by comparing
    names: ``resolve()`` keeps the case typed, so ``--out Data/x`` for the folder ``data`` on a Mac's or Windows'
    disk was not inside it."""
    resolved = path.resolve()  # ``data/../x`` is beside data, not in it
    return any(os.path.samefile(parent, folder) for parent in (resolved, *resolved.parents) if parent.exists())


def model_folder_kind(folder: Path) -> str | None:
    """What model ``folder`` holds, recognised by the files its loader reads: "CAE run" or "classifier bundle"."""
    from caex.classifier.bundle import INFO_FILE
    from caex.model.cae import CONFIG_FILE, WEIGHTS_FILE
    from caex.training.checkpoint import CHECKPOINT_FILE, TRAIN_CONFIG_FILE
    from caex.training.logging import LOG_JSONL

    # finished, or training (its settings beside its log; explain's <image>.json could be train_config.json)
    if all((folder / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE)) or (folder / CHECKPOINT_FILE).is_file() \
            or all((folder / name).is_file() for name in (TRAIN_CONFIG_FILE, LOG_JSONL)):
        return "CAE run"
    if (folder / INFO_FILE).is_file():
        return "classifier bundle"
    return None


@contextmanager
def warn_stale_files(out: str | os.PathLike, kept: Collection[str] = ()) -> Iterator[None]:
    """Warn once, after the work in the ``with`` block, about the files in ``out`` that it did not write (but
    for the ``kept`` ones, an earlier run's results this one reuses).

    An earlier run's files (an old map_tsne.png after ``--no-tsne``, explanations of other images) would pass
    for this run's results, and ``caex report`` shows them as such; they are the user's, so they are named,
    never deleted. Every caex write renames a new file over the old one, so a rewritten file has a new inode
    even when the file system's mtime granularity gives it the old mtime. No warning when the work fails.
    """
    before = _file_stamps(Path(out))
    yield
    stale = sorted(name for name, stamp in _file_stamps(Path(out)).items()
                   if before.get(name) == stamp and name not in kept)
    if stale:
        warn(f"{out} also holds {len(stale)} file(s) that this run did not write, e.g. of an earlier run "
             f"(first: {stale[0]}); use a fresh --out to keep runs apart")


def _file_stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """Inode and mtime of each file directly in ``folder``; hidden ones (.DS_Store, editors') and system metadata
    (Thumbs.db) are no results."""
    from caex.data.sources import is_hidden

    if not folder.is_dir():
        return {}
    stamps = {}
    for path in folder.iterdir():
        if not is_hidden(path.name) and path.is_file():
            info = path.stat()
            stamps[path.name] = (info.st_ino, info.st_mtime_ns)
    return stamps


def load_data_from_args(args: argparse.Namespace) -> DataBundle:
    """Load the DATA spec the way every command does: split by ``--split-seed``, not the command's ``--seed``, so
    that evaluating with another seed never tests a model on its own training images."""
    from caex.data import load_dataset

    return load_dataset(args.data, size=args.size, channels=args.channels, seed=args.split_seed,
                        skip_bad=args.skip_bad)

