"""Explaining image files in bulk: what ``caex explain`` does, as a function of the Python API."""

from __future__ import annotations

import glob
import hashlib
import itertools
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch

from caex.data.sources import (EXPLAIN_OUTPUTS, IMAGE_SUFFIXES, ReadNotes, image_tree, is_hidden, is_metadata,
                               load_image, without_explanations)
from caex.data.types import is_line_breaking, nfc
from caex.explain.explainer import Explainer, ExplainError, Explanation, at_target_counted
from caex.explain.render import save_explanation
from caex.utils.io import folder_lock, json_safe, read_json
from caex.utils.progress import progress
from caex.utils.provenance import models_record, run_record
from caex.utils.warn import warn


@dataclass
class FilesResult:
    """What :func:`explain_files` did."""

    written: list[str] = field(default_factory=list)  # the output stems written now
    explained: int = 0                                 # images explained now
    done_already: int = 0                              # images ``skip_done`` left alone
    kept: set[str] = field(default_factory=set)        # the files of those earlier explanations


def map_settings(*, path: str, steps: int, seed: int, smoothing: float, saliency: str = "weighted",
                 stop_at_flip: bool = True, target: str | None = None, all_targets: bool = False,
                 target_by: str = "probability", reference: str | None = None, arch: str | None = None
                 ) -> dict[str, Any]:
    """How an explanation's maps are made, as its summary records them (``settings``) and ``--skip-done`` compares
    them: ``caex explain``'s options by name (``reference``: the reference image's digest; ``target``: the class
    asked for by name; ``arch``: the classifier architecture given with its weights), the demo's alike."""
    return {"arch": arch, "path": path, "reference": reference, "steps": steps, "target": target,
            "all_targets": all_targets, "target_by": None if target is not None or all_targets else target_by,
            "saliency": saliency, "smoothing": smoothing, "stop_at_flip": stop_at_flip, "seed": seed}


def with_models(settings: dict[str, Any], models: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with the models that made the maps by content (:func:`caex.utils.provenance.models_record`):
    a path says nothing of a model retrained in place."""
    return {"cae": models["cae"]["digest"],
            "classifier": models["classifier"]["digest"] or models["classifier"]["source"], **settings}


def explain_files(explainer: Explainer, paths: str | os.PathLike | Sequence[str | os.PathLike],
                  out_dir: str | os.PathLike, *,
                  settings: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None,
                  batch_size: int = 16, skip_done: bool = False, gif: bool = True, verbose: bool = False,
                  **explain_options: Any) -> FilesResult:
    """Explain every image in ``paths`` and write ``caex explain``'s files for each into ``out_dir``.

    ``paths`` are image files, folders (searched recursively) or globs, or one of them, as ``caex explain``
    takes them (:func:`collect_images`).

    Each file is read as the CAE's training images were (:func:`caex.data.load_image`) and explained in
    batches of ``batch_size`` by ``explainer.explain(**explain_options)`` (``target``, ``path``, ``steps``,
    ``all_targets``, ...). Output stems are the file names made safe (:func:`safe_name`), ``-2``, ``-3``, ... where
    two folders hold the same name or ``out_dir`` holds another file's explanation under it (an earlier run's,
    kept), and ``_to-<class>`` per target with ``all_targets``. ``settings`` (how the maps are made), with the
    digests of the explainer's CAE and classifier added, is stored in every summary; with ``skip_done``, a file
    whose finished explanations from the same settings and models are in ``out_dir`` already is left alone (an
    interrupted run is finished, not redone; a classifier retrained into the same folder is another model).
    Beside them, never compared, each summary records its provenance: the models' paths, the device, software
    and time (:func:`caex.utils.provenance.run_record`) and ``inputs``, other inputs worth naming (a reference
    image's path, say). ``out_dir`` is locked meanwhile. ``gif=False`` leaves out the animations, most of the
    bytes of a large run.
    """
    if skip_done and settings is None:  # without them any earlier explanation would pass for this run's
        raise ExplainError("skip_done needs settings (how the maps are made) to tell this run's finished files "
                           "from an earlier run's")
    out = Path(out_dir)
    models = models_record(explainer.cae, explainer.classifier)
    if settings is not None:
        settings = with_models(settings, models)
    provenance = json_safe(run_record(explainer.device, **models, **(inputs or {})))
    # absolute, so that a rerun from another folder, or with the inputs typed otherwise, finds its finished files
    sources = [Path(os.path.abspath(path)) for path in
               collect_images([paths] if isinstance(paths, (str, os.PathLike)) else paths, out=out)]
    size, channels = explainer.cae.config.image_size, explainer.cae.config.channels
    result = FilesResult()
    all_targets = bool(explain_options.get("all_targets"))
    slugs = class_slugs(explainer.class_names)
    at_target, notes, outcomes = 0, ReadNotes(), PathOutcomes()
    with folder_lock(out, "caex explain"):
        earlier = EarlierOutputs(out, slugs if all_targets else None)
        stems = unique_stems(sources, earlier)
        if skip_done:
            others = explainer.target_count() if all_targets else None
            finished = {index: files for index, path in enumerate(sources)
                        if (files := earlier.finished_files(stems[index], str(path), json_safe(settings), others))}
            result.kept, result.done_already = set().union(*finished.values()), len(finished)
            sources = [path for index, path in enumerate(sources) if index not in finished]
            stems = [stem for index, stem in enumerate(stems) if index not in finished]
        with progress(total=len(sources), desc="explain", unit="img", enabled=verbose) as bar, \
                at_target_counted():  # over all batches below, and warned of once
            for begin in range(0, len(sources), batch_size):
                batch = sources[begin:begin + batch_size]
                images = torch.stack([load_image(path, size, channels, notes=notes) for path in batch])
                explained = explainer.explain(images, **explain_options)
                for explanation in explained if isinstance(explained, list) else [explained]:
                    at_target += int((explanation.target == explanation.prediction).sum())
                    for index, path in enumerate(batch):
                        outcomes.add(explanation, index, str(path))
                        stem = stems[begin + index]
                        if all_targets:
                            stem = f"{stem}_to-{slugs[int(explanation.target[index])]}"
                        save_explanation(explanation, index, images[index], out, stem, str(path), settings, gif=gif,
                                         provenance=provenance)
                        result.written.append(stem)
                result.explained += len(batch)
                bar.update(len(batch))
    notes.warn()
    outcomes.warn()
    if at_target:  # their flip_step 0 would read like a result (their json says "flipped": false)
        warn(f"{at_target} image(s) are already classified as their target class: their paths lead further into "
             "it, so nothing flips and their maps show what makes them more so")
    return result


@dataclass
class PathOutcomes:
    """Paths whose maps do not show what flips the classifier, gathered over every batch for one warning each."""

    explained: int = 0
    unflipped: list[str] = field(default_factory=list)  # never reached the target class
    not_finite: list[str] = field(default_factory=list)  # the classifier gave NaN or inf for the input
    at_reconstruction: list[str] = field(default_factory=list)  # the reconstruction is already the target class

    def add(self, explanation: Explanation, index: int, source: str) -> None:
        self.explained += 1
        if not explanation.predicted[index]:
            self.not_finite.append(source)
        elif explanation.unflipped[index]:
            self.unflipped.append(source)
        elif explanation.target_at_reconstruction[index]:
            self.at_reconstruction.append(source)

    def warn(self) -> None:
        if self.not_finite:
            warn(f"the classifier's outputs are not finite (NaN or inf) for {len(self.not_finite)} image(s) "
                 f"(first: {self.not_finite[0]}), as a model that divides by each image's spread gives on a blank "
                 "one: their maps are empty and their probabilities null")
        if self.unflipped:
            warn(f"{len(self.unflipped)} of {self.explained} path(s) never reached the target class (first: "
                 f"{self.unflipped[0]}): their maps show changes that did not flip the classifier, and their "
                 'summaries say "flipped": false')
        if self.at_reconstruction:
            warn(f"{len(self.at_reconstruction)} of {self.explained} path(s) \"flipped\" at step 0 (first: "
                 f"{self.at_reconstruction[0]}): the classifier already assigns the CAE's reconstruction to the target "
                 "class, though not the input, so the CAE does not reproduce what made these images their class and "
                 "their maps show no change that flips it (train the CAE longer, or on more images of that class)")


#: Longest output file name in UTF-8 bytes, its temporary twin (``.<name>.<random>.tmp``) included: eCryptfs (an
#: encrypted home folder) allows 143 bytes a name, most other file systems 255.
MAX_NAME_BYTES = 143
#: What the longest file name of an output adds to its stem in its temporary form (``.<stem>_saliency.png.<8>.tmp``).
NAME_OVERHEAD = len("._saliency.png.12345678.tmp")
#: Longest output stem and class part of an output name, in UTF-8 bytes: ``<stem>-<n>_to-<class>`` (to ``-999``)
#: with :data:`NAME_OVERHEAD` fits :data:`MAX_NAME_BYTES`.
MAX_STEM_BYTES = 72
MAX_SLUG_BYTES = 36


def shortened(name: str, limit: int) -> str:
    """``name`` if it fits ``limit`` UTF-8 bytes, else its start and a hash of the whole (``start~1a2b3c4d``), so
    that long names stay distinct once cut and an output name never exceeds the file system's limit. A name read
    under an ASCII locale holds surrogates for its other bytes (a model trained there records class names so)."""
    encoded = name.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:8]
    start = encoded[:limit - len(digest) - 1].decode("utf-8", "ignore")
    return f"{start}~{digest}"


#: Characters a file name may not hold on some file system (Windows forbids all of these, POSIX the slash).
UNSAFE_IN_FILE_NAMES = frozenset('/\\<>:"|?*')
#: Device names Windows reserves in every folder, in any case and with any extension (``CON.json`` is the console).
RESERVED_ON_WINDOWS = frozenset({"con", "prn", "aux", "nul", *(f"{port}{digit}" for port in ("com", "lpt")
                                                                 for digit in range(1, 10))})


def safe_name(name: str, limit: int) -> str:
    """``name`` as a readable part of a file name on any system: path separators, characters Windows forbids
    (:data:`UNSAFE_IN_FILE_NAMES`), control characters and a leading dot replaced by ``_`` (``../x`` must not
    write outside the output folder, ``.x`` would be hidden), a name Windows reserves (``CON``, ``com1.x``) given
    a leading ``_``, and a long one cut to ``limit`` bytes (:func:`shortened`). Names that coincide once made safe
    are told apart by the caller."""
    safe = "".join("_" if char in UNSAFE_IN_FILE_NAMES or is_line_breaking(char) else char for char in name)
    if safe.startswith("."):
        safe = "_" + safe[1:]
    if safe.split(".")[0].rstrip(" ").casefold() in RESERVED_ON_WINDOWS:
        safe = "_" + safe
    return shortened(safe, limit)


def name_key(name: str) -> str:
    """What a disk that ignores case and Unicode form (macOS, Windows) tells two file names apart by: ``A`` and
    ``a``, or ``é`` composed and decomposed (NFC, NFD), are one file there."""
    return nfc(name).casefold()


def class_slugs(class_names: Sequence[str]) -> list[str]:
    """One file-name part per class for ``_to-<class>``, made safe (:func:`safe_name`); classes whose parts would
    coincide (``a/b`` and ``a_b``, or ``A`` and ``a`` on a case-insensitive disk) get their index added, so one
    class's files never overwrite another's."""
    slugs = [safe_name(name, MAX_SLUG_BYTES) or f"class{index}" for index, name in enumerate(map(str, class_names))]
    while len(set(map(name_key, slugs))) < len(slugs):
        counts = Counter(map(name_key, slugs))
        slugs = [f"{slug}-{index}" if counts[name_key(slug)] > 1 else slug for index, slug in enumerate(slugs)]
    return slugs


def unique_stems(paths: Sequence[Path], earlier: EarlierOutputs | None = None) -> list[str]:
    """File stems for output names, made safe (:func:`safe_name`) so that every output name fits any file system;
    a repeated stem (same name in two folders, differing only in case or Unicode form, or alike once made safe)
    gets -2, -3, ..., as does one under which ``earlier`` outputs explain another file (an earlier run into the
    same folder, whose results would be overwritten)."""
    used: set[str] = set()
    stems = []
    for path in paths:
        base = safe_name(path.stem, MAX_STEM_BYTES)
        stem, count = base, 1
        while name_key(stem) in used or (earlier is not None and earlier.explain_another(stem, str(path))):
            count += 1
            stem = f"{base}-{count}"
        used.add(name_key(stem))
        stems.append(stem)
    return stems


def check_stems(stems: Sequence[str]) -> None:
    """Refuse, before anything is written, output stems given by hand (:meth:`Explanation.save`) that are no file
    name of their own on every system: a path (``../x`` wrote outside the folder, ``a/b`` made a folder), a name
    :func:`safe_name` would change (hidden ``.x``, Windows' ``CON`` or ``x:y``: the names ``caex explain`` never
    writes), two stems that a Mac's or Windows' disk takes for one (``A`` and ``a``), or a stem whose longest file
    name does not fit :data:`MAX_NAME_BYTES` (an OSError once earlier images' files were written)."""
    limit = MAX_NAME_BYTES - NAME_OVERHEAD
    seen: dict[str, str] = {}  # by name_key
    for stem in stems:
        if not stem:
            raise ExplainError("save: an empty stem is no file name")
        if len(stem.encode("utf-8", "surrogatepass")) > limit:
            raise ExplainError(f"save: stem {stem[:40]!r}... is too long for a file name (at most {limit} UTF-8 "
                               "bytes)")
        if (safe := safe_name(stem, limit)) != stem:
            raise ExplainError(f"save: stem {stem!r} is no file name on every system (a path, a leading '.', a "
                               f"name Windows reserves or a character it forbids); {safe!r} is")
        first = seen.get(name_key(stem))
        if first is not None:  # the second image's files would replace the first's; ascii() shows NFC from NFD
            raise ExplainError(f"save: stems {first!r} are given more than once" if first == stem else
                               f"save: stems {first!a} and {stem!a} name one file on a Mac's or Windows' "
                               "disk (which ignore case and Unicode form)")
        seen[name_key(stem)] = stem


class EarlierOutputs:
    """The summaries an output folder already holds, listed once and read when asked about, so that a run never
    writes over an earlier run's explanation of another file. The run writes ``<stem>.json``, or with
    ``all_targets`` ``<stem>_to-<slug>.json`` for the ``targets`` (:func:`class_slugs`): only those names are
    its stem's (``scan_to-review.json`` is scan_to-review.png's where no class is named review)."""

    def __init__(self, out: Path, targets: Sequence[str] | None = None) -> None:
        self.out = out
        self.targets = targets
        self.summaries: dict[str, Any] = {}  # by file name, each read once (None: unreadable)
        self.names: dict[str, list[str]] = {}  # by name_key, without .json: what a Mac's or Windows' disk overwrites
        if not out.is_dir():  # a new output folder: nothing to keep
            return
        for path in out.glob("*.json"):
            self.names.setdefault(name_key(path.name.removesuffix(".json")), []).append(path.name)

    def _outputs(self, stem: str) -> list[str]:
        """The summaries' names, without ``.json``, that this run writes under ``stem``."""
        return [stem] if self.targets is None else [f"{stem}_to-{slug}" for slug in self.targets]

    def explain_another(self, stem: str, source: str) -> bool:
        """Whether a summary this run would write under ``stem`` is there and not ``source``'s: another file's,
        or no caex summary (a user's)."""
        return any(not same_file(recorded_source(self._summary(file)), source)
                   for name in self._outputs(stem) for file in self.names.get(name_key(name), ()))

    def _summary(self, name: str) -> Any:
        """The JSON in ``name``, read once whether asked whose explanation it is or whether it is finished."""
        if name not in self.summaries:
            try:
                self.summaries[name] = read_json(self.out / name)
            except (OSError, ValueError):
                self.summaries[name] = None
        return self.summaries[name]

    def finished_files(self, stem: str, source: str, settings: dict[str, Any] | None, others: int | None) -> set[str]:
        """The files of ``source``'s finished explanation(s) made with ``settings`` (its summary JSON, written
        last, names them), or an empty set: one explanation, or ``others`` of them with ``all_targets``, found in
        the folder's listing (a listing per image made resuming a large run quadratic in its images)."""
        names = [f"{name}.json" for name in self._outputs(stem) if f"{name}.json" in self.names.get(name_key(name), ())]
        if len(names) != (1 if others is None else others):
            return set()
        files = set(names)
        for name in names:
            summary = self._summary(name)
            listed = summary.get("files", {}).values() if isinstance(summary, dict) else ()
            if (not isinstance(summary, dict) or summary.get("settings") != settings
                    or not same_file(recorded_source(summary), source)
                    or not listed or not all((self.out / str(file)).is_file() for file in listed)):
                return set()
            files.update(str(file) for file in listed)
        return files


def recorded_source(summary: object) -> str | None:
    """The image a summary explains, as an absolute path: caex before 882a651 recorded it as typed
    (``imgs/00.png``), which never matched the absolute path of the same file, so rerunning into such a folder wrote
    every explanation again under ``<stem>-2`` (read against the working folder, where reruns are made)."""
    source = summary.get("source") if isinstance(summary, dict) else None
    return os.path.abspath(source) if isinstance(source, str) else None


def same_file(recorded: str | None, source: str) -> bool:
    """Whether a summary's ``recorded`` source is ``source``: one file however written (another case of its name
    on a Mac or Windows, a symlinked folder: ``--skip-done`` redid everything under ``-2``) where both exist,
    else the same path."""
    if recorded is None or recorded == source:
        return recorded is not None
    try:
        return os.path.samefile(recorded, source)
    except (OSError, ValueError):  # either is gone (or no path: a NUL in a hand-made summary)
        return os.path.normcase(recorded) == os.path.normcase(source)


def collect_images(patterns: Sequence[str | os.PathLike], out: str | os.PathLike | None = None) -> list[Path]:
    """Image files named directly (any Pillow format), found in folders (recursively) or by glob; once each, however
    spelled (``x.png``, ``./a/../x.png`` and its absolute path are one file; a symlink is a name of its own).

    Files inside the output folder ``out`` or in any other folder of caex explain outputs are not searched (a
    rerun would explain its own overlays, a second run the first's), and an ``out`` that is an input folder, holds
    one or holds a file named directly or by a glob's folder is refused, since its results would mix with the inputs.
    """
    output = Path(out).resolve() if out is not None else None

    def inside(file: Path) -> bool:
        return output is not None and file.resolve().is_relative_to(output)

    def refuse(kind: str, name: str | Path) -> NoReturn:
        raise ExplainError(f"output folder {out}: holds the input {kind} {name}; its results would be mixed with the "
                           "images (and explained by a rerun); choose another")

    def refuse_inputs_held(files: list[Path]) -> None:
        """Refuse an ``out`` holding images that are no caex figures: they were skipped as outputs (unexplained),
        and an explanation of another file of their name was written beside them."""
        inputs = [file for file in files if inside(file) and not file.name.endswith(EXPLAIN_FIGURES)]
        if inputs:
            refuse("file", inputs[0])

    found: dict[Path, Path] = {}  # by absolute path, as explain_files records each source
    for pattern in map(str, patterns):
        path = Path(pattern)
        if path.is_dir():
            if inside(path):
                refuse("folder", pattern)
            if output is not None and output.is_relative_to(path.resolve()) and output.is_dir():
                refuse_inputs_held(sorted(p for p in output.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                                          and not any(map(is_hidden, p.relative_to(output).parts))))
            matches = [p for p in image_tree(path, "name other image files, or a glob of them, to explain them")
                       if not inside(p)]
            if not matches:
                raise ExplainError(f"{pattern}: folder contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif path.is_file():
            if path.suffix.lower() == ".npz":
                raise ExplainError(f"{pattern}: caex explain reads image files, not .npz data sets (caex evaluate "
                                   "and caex manifold read those; save the images to explain as PNG)")
            if inside(path):
                refuse("file", pattern)
            matches = [path]
        elif glob.has_magic(pattern):
            below = len(_glob_folder(pattern).parts)  # glob leaves out hidden names itself, metadata not
            files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()
                           and not any(map(is_metadata, Path(p).parts[below:])))
            held = [file for file in files if inside(file)]
            # named there (or nowhere else), not met in a search of a folder that holds --out
            if held and (inside(_glob_folder(pattern)) or len(held) == len(files)):
                refuse("file", held[0])
            refuse_inputs_held([file for file in held if file.suffix.lower() in IMAGE_SUFFIXES])
            matches = without_explanations([file for file in files if file not in held], pattern)
            if not matches:
                raise ExplainError(f"{pattern}: no files match this pattern{_bracket_hint(pattern)}")
        else:
            raise ExplainError(f"{pattern}: no such image file or folder")
        for match in matches:
            found.setdefault(Path(os.path.abspath(match)), match)
    return list(found.values())


#: The images among caex explain's outputs (the overlay and the strip), which a search of its folder skips.
EXPLAIN_FIGURES = (EXPLAIN_OUTPUTS["overlay"], EXPLAIN_OUTPUTS["strip"])


def _glob_folder(pattern: str) -> Path:
    """The folder a glob searches: its leading parts free of wildcards (``.`` for ``*.png``)."""
    parts = Path(pattern).parts
    return Path(*itertools.takewhile(lambda part: not glob.has_magic(part), parts[:-1]))


def _bracket_hint(pattern: str) -> str:
    """What to add to "no files match" where the pattern passes through a folder whose name holds ``[`` or ``]``
    (``batch [2024]/*.png``), which glob read as a set of characters."""
    parts = Path(pattern).parts
    for end in range(len(parts) - 1, 0, -1):
        folder = os.path.join(*parts[:end])
        if glob.has_magic(folder) and os.path.isdir(folder):
            if any(os.path.isfile(p) for p in glob.glob(os.path.join(glob.escape(folder), *parts[end:]),
                                                       recursive=True)):
                return "; [ and ] are glob characters: give the folder, or write [[] for ["
            break
    return ""
