"""Build one self-contained HTML report from the folders a caex run leaves behind.

The report only reads files (it never loads a model), so it can be rebuilt in a
second from any run, and a partial run gives a partial report: every figure or
table whose file is missing is listed under its section as "not available"
instead of failing. Figures are embedded as base64 PNG data URIs and the style
is inline, so the single file opens offline.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import json
import math
import os
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caex import __version__
from caex.classifier.bundle import INFO_FILE, ONNX_FILE, bundle_folder
from caex.data.sources import EXPLAIN_OUTPUTS
from caex.data.types import same_data_spec
from caex.errors import CaexError
from caex.evaluation.runner import method_name, options_text, with_count
from caex.explain.captions import NO_CLASS, flip_words, overlay_caption, shown_flip
from caex.model.cae import CONFIG_FILE as CAE_CONFIG_FILE
from caex.report import readings
from caex.report.schema import Schema, conform
from caex.report.template import PAGE, STYLE
from caex.training.checkpoint import CHECKPOINT_FILE
from caex.training.trainer import SAMPLE_CLASSES, SUMMARY_FILE
from caex.utils import atomic_write_text
from caex.utils.numbers import MISSING, fixed
from caex.utils.plotting import MASK_LEGEND, figure_png, literal_text

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing's own from Python 3.13

#: Sub-folders of a demo run, in pipeline order (``caex demo`` writes exactly these).
STAGE_FOLDERS = ("data", "classifier", "cae", "manifold", "explain", "evaluate")
REPORT_FILE = "report.html"
#: Entries of a training log that are bookkeeping, not loss terms.
LOG_BOOKKEEPING = {"iteration", "step", "iter", "epoch", "time", "elapsed", "seconds", "lr", "lr_gen", "lr_dis",
                   "wall_time", "images_per_second", "it_per_s"}


@dataclass
class ReportSources:
    """Where each part of the report comes from; ``None`` marks a part that a CAE run folder lacks and that was
    not given."""

    title: str
    root: Path
    data: Path | None = None
    classifier: Path | None = None
    cae: Path | None = None
    manifold: Path | None = None
    explain: Path | None = None
    evaluate: Path | None = None
    #: Where the report is written, for links to the files beside it (``None``: not known, no links).
    report_file: Path | None = None

    @classmethod
    def from_run(cls, run: str | os.PathLike, *, manifold: str | os.PathLike | None = None,
                 explain: str | os.PathLike | None = None, evaluate: str | os.PathLike | None = None,
                 classifier: str | os.PathLike | None = None) -> ReportSources:
        """Map a demo run folder (``data/ classifier/ cae/ ...``) or a CAE training run folder to sources.

        Explicit ``classifier``/``manifold``/``explain``/``evaluate`` folders override what the
        run folder holds, so a CAE run analysed separately can still be reported.
        """
        root = _existing_folder(run, "RUN")
        parts = {name: root / name for name in STAGE_FOLDERS}  # a stage the demo did not reach: files missing
        if not any(folder.is_dir() for folder in parts.values()):
            if not any((root / name).is_file() for name in ("config.json", "log.jsonl")):
                raise CaexError(f"RUN {str(run)!r}: neither a demo run folder (no {', '.join(STAGE_FOLDERS)} "
                                "sub-folders) nor a CAE run folder (no config.json or log.jsonl)")
            parts = {"cae": root}
        if classifier is not None:
            parts["classifier"] = _given_classifier(classifier)
        for name, folder in {"manifold": manifold, "explain": explain, "evaluate": evaluate}.items():
            if folder is not None:
                parts[name] = _given_folder(folder, name)
        return cls(title=f"caex report: {root.resolve().name}", root=root, **parts)


#: What marks each stage's output folder, for folders given explicitly (a swapped or empty one is an error,
#: where a demo run's missing stage is only shown as missing): files only that stage writes, as a CAE run folder
#: holds a summary.json too and a classifier bundle a *.json, which passed for a manifold and an explain folder.
_STAGE_MARKERS = {"manifold": "codes.csv", "evaluate": "results.json", "explain": f"*{EXPLAIN_OUTPUTS['overlay']}"}


def _given_folder(path: str | os.PathLike, stage: str) -> Path:
    folder = _existing_folder(path, f"--{stage}")
    if not any(folder.glob(_STAGE_MARKERS[stage])):
        raise CaexError(f"--{stage} {str(path)!r}: holds no {_STAGE_MARKERS[stage]}; give the output folder of "
                        f"caex {stage}")
    return folder


def _given_classifier(path: str | os.PathLike) -> Path:
    """The folder whose classifier.json describes ``--classifier``: a bundle folder must hold a readable one; a
    model file the other commands took (an ONNX or TorchScript export) may have none, and the report says so."""
    given = Path(path)
    if not given.exists():
        raise CaexError(f"--classifier {str(path)!r}: no such file or folder")
    folder = bundle_folder(given)
    info = folder / INFO_FILE
    if (given.is_dir() or info.is_file()) and _read_json(info, CLASSIFIER_SCHEMA) is None:
        raise CaexError(f"--classifier {str(path)!r}: {info} is missing or not a readable JSON object")
    return folder


def _existing_folder(path: str | os.PathLike, what: str) -> Path:
    folder = Path(path)
    if not folder.exists():
        raise CaexError(f"{what} {str(path)!r}: no such folder")
    if not folder.is_dir():
        raise CaexError(f"{what} {str(path)!r}: not a folder")
    return folder


# --------------------------------------------------------------------------- building blocks


@dataclass
class Section:
    """One titled block of the page; ``missing`` lists what could not be shown and why."""

    anchor: str
    title: str
    lead: str
    parts: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def render(self) -> str:
        body = "\n".join(self.parts)
        if self.missing:
            items = "".join(f"<li>{html.escape(item)}</li>" for item in self.missing)
            label = "Not available" if not self.parts else "Also not available"
            body += f'\n<div class="missing"><b>{label}:</b><ul>{items}</ul></div>'
        return (f'<section id="{self.anchor}"><h2>{html.escape(self.title)}</h2>'
                f'<p class="lead">{html.escape(self.lead)}</p>\n{body}</section>')

    def figure(self, folder: Path | None, name: str, caption: str, *, alt: str | None = None) -> None:
        """Embed ``folder/name`` if it exists, otherwise note it as missing."""
        path = None if folder is None else folder / name
        if path is None or not path.is_file():
            self.missing.append(f"{caption} ({_where(folder, name)} not found)")
            return
        self.parts.append(figure_html(path.read_bytes(), caption, alt=alt))

    def reading(self, text: str) -> None:
        self.parts.append(f'<p class="reading">{html.escape(text)}</p>')

    def not_given(self, folder: Path | None, option: str, command: str) -> TypeIs[None]:
        """Note a part that a CAE run folder does not hold and that was not given, in one line (not one line
        per missing file); True if so (and ``folder`` a Path after a False, as type checkers read it)."""
        if folder is None:
            self.missing.append(f"not part of this run folder: give {option} (the output of `{command}`)")
        return folder is None


def _where(folder: Path | None, name: str) -> str:
    return name if folder is None else str(folder / name)


def _link(path: Path, report_file: Path | None) -> str:
    """``path`` as a link relative to the report's folder, which keeps working where the two move together; plain
    text where the report's place is not known or no relative path leads there (another drive)."""
    text = html.escape(str(path))
    if report_file is None:
        return text
    try:
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(report_file.parent))
    except ValueError:
        return text
    return f'<a href="{urllib.parse.quote(Path(relative).as_posix())}">{text}</a>'  # quoted: safe in the attribute


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(png: bytes, caption: str, *, enlarge: bool = False, alt: str | None = None) -> str:
    """An embedded PNG with its caption; ``alt`` says in a few words what the image is (the caption, where not
    given), as a screen reader read a long caption twice, once as the image and once below it.

    ``enlarge`` shows a small pixel grid (the trainer's samples) at a readable size, pixels kept sharp.
    """
    css = ' class="enlarge"' if enlarge else ""
    return (f'<figure><img{css} src="{png_data_uri(png)}" alt="{html.escape(alt or caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def format_cell(value: Any) -> str:
    """Numbers to 3 significant decimals, NaN/None as :data:`MISSING`, everything else as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return fixed(value, ",.1f" if abs(value) >= 100 else ".3f")
    return str(value)


def percent(value: Any) -> str:
    """A share as a percentage cell ("91.2%"), missing values as :data:`MISSING`; above 99% it is floored like the
    readings' shares, so a table never shows 99.1% where its sentence says 99.0%."""
    return f"{readings.percent(value):.1f}%" if readings.finite(value) else MISSING


def table_html(header: Sequence[str], rows: Sequence[Sequence[Any]], *, highlight: str | None = None,
               caption: str | None = None, row_headers: bool = False) -> str:
    """A plain HTML table (scrolling sideways on a narrow screen); rows whose first cell is ``highlight`` or one
    of its variants (``CAE-nearest`` for ``CAE``, ignoring case) are bold.

    ``caption`` names the table to a screen reader's table list; ``row_headers`` makes each row's first cell its
    header, so that a cell of a matrix is read out with both the row and the column it sits in.
    """
    head = "".join(f'<th scope="col">{column_heading(str(name))}</th>' for name in header)
    lines = []
    for row in rows:
        marked = highlight is not None and readings.is_variant_of(str(row[0]), highlight)
        first, *rest = (html.escape(format_cell(value)) for value in row)
        cells = (f'<th scope="row">{first}</th>' if row_headers else f"<td>{first}</td>") + "".join(
            f"<td>{cell}</td>" for cell in rest)
        lines.append(f'<tr class="highlight">{cells}</tr>' if marked else f"<tr>{cells}</tr>")
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<div class="table-scroll"><table>{title}<thead><tr>{head}</tr></thead><tbody>{"".join(lines)}'
            "</tbody></table></div>")


#: What a column heading's closing arrow means: shown as the arrow, said in words (a screen reader said "up arrow").
ARROW_MEANINGS = {"↑": "higher is better", "↓": "lower is better"}


def column_heading(name: str) -> str:
    """``name`` escaped; a closing arrow (``AOPC ↑``) stays visible and is read out as what it means."""
    label, _, arrow = name.rpartition(" ")
    if arrow not in ARROW_MEANINGS:
        return html.escape(name)
    meaning = ARROW_MEANINGS[arrow]
    return f'{html.escape(label)} <span role="img" aria-label="{meaning}" title="{meaning}">{arrow}</span>'


def kpis_html(figures: Sequence[tuple[str, str]]) -> str:
    """A row of headline figures: (value, label) pairs."""
    boxes = "".join(f'<div class="kpi"><b>{html.escape(value)}</b><span>{html.escape(label)}</span></div>'
                    for value, label in figures)
    return f'<div class="kpis">{boxes}</div>'


def _read_json(path: Path, schema: Schema) -> dict[str, Any] | None:
    """The parts of a JSON object that match ``schema``, or ``None`` when the file is absent, unreadable or
    holds no object (a partial run); a value of the wrong type (a hand edit) reads as missing, not as a crash."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return conform(content, schema) if isinstance(content, dict) else None


def _json_or_missing(section: Section, folder: Path | None, name: str, what: str,
                     schema: Schema) -> dict[str, Any] | None:
    content = None if folder is None else _read_json(folder / name, schema)
    if content is None:
        section.missing.append(f"{what} ({_where(folder, name)} not found or unreadable)")
    return content


# --------------------------------------------------------------------------- training curves


def read_training_log(path: Path) -> list[dict[str, float]]:
    """The numeric entries of every readable line of a ``log.jsonl`` (a torn last line is skipped)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append({key: float(value) for key, value in _flatten(record).items()
                            if readings.finite(value)})
    return records


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"rec": 1}}`` -> ``{"loss/rec": 1}``, so nested and flat logs plot alike."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@literal_text
def training_curves_png(records: list[dict[str, float]]) -> bytes | None:
    """One small panel per loss term against the iteration (whole numbers), raw values faint and a moving average
    bold, or the raw values bold where there are too few for an average."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    step_key = next((key for key in ("iteration", "step", "iter") if records and key in records[0]), None)
    terms = sorted({key for record in records for key in record} - LOG_BOOKKEEPING)
    if not records or not terms:
        return None
    columns = min(4, len(terms))
    rows = math.ceil(len(terms) / columns)
    figure = Figure(figsize=(3.3 * columns, 2.3 * rows))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, term in zip(axes, terms):
        points = [(index if step_key is None else record.get(step_key, index), record[term])
                  for index, record in enumerate(records) if term in record]
        steps, values = zip(*points)
        window = len(values) // 20
        averaged = window > 1
        axis.plot(steps, values, color="#9fb3c8" if averaged else "#2f6f9f", linewidth=0.8)
        if averaged:
            axis.plot(steps[window - 1:], np.convolve(values, np.ones(window) / window, mode="valid"),
                      color="#2f6f9f", linewidth=1.6)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("iteration" if step_key else "record", fontsize=8)
        axis.set_title(term, fontsize=9)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    for axis in axes[len(terms):]:
        axis.set_visible(False)
    figure.tight_layout()
    return figure_png(figure, dpi=100, bbox_inches="tight")


# --------------------------------------------------------------------------- sections


#: What the report reads of each JSON file, with its types (see :mod:`caex.report.schema`); the rest is ignored.
STAGE_SCHEMA = {"status": str, "seconds": float}
DATASET_SCHEMA = {"spec": str, "class_names": [str], "image_size": int,
                  "class_counts": {"train": [int], "test": [int]}}
CLASSIFIER_SCHEMA = {"arch": str, "class_names": [str], "image_size": int, "channels": int, "test_accuracy": float,
                     "test_class_counts": [int], "data_spec": str}
TRAINING_SCHEMA = {"iters": int, "iters_asked": int, "seconds": float, "images_per_second": float,
                   "recon_l1": float}
MANIFOLD_SCHEMA = {
    "class_names": [str], "data": str, "code_dim": int,
    "counts": {"train_per_class": [int], "test_per_class": [int]},
    "separability": {str: {"mean": float, "std": float, "balanced": float, "dims": int, "folds": int,
                           "skipped": bool}},
    "swap": {"matrix": [[(float, None)]], "mean": float},  # null: the diagonal and unmeasured pairs
    "smoothness": {"per_class": {str: (float, None)}},  # null: a class that could not be measured
    "paths": {"monotone_share": float},
    "files": {str: str}}  # what the analysis wrote
EXPLANATIONS_SCHEMA = {"steps": int, "examples": [{"stem": str, "title": str, "source": str, "flip_step": int}]}


def overview_section(sources: ReportSources) -> Section:
    """Headline figures and which stages ran (from the demo's ``stage.json`` markers where present)."""
    section = Section("overview", "Overview", "What was run and the headline figures, each explained below.")
    figures = []
    classifier_info = (None if sources.classifier is None
                       else _read_json(sources.classifier / "classifier.json", CLASSIFIER_SCHEMA))
    if classifier_info and readings.finite(classifier_info.get("test_accuracy")):
        figures.append((readings.share(classifier_info["test_accuracy"]), "classifier test accuracy"))
    summary = None if sources.manifold is None else _read_json(sources.manifold / "summary.json", MANIFOLD_SCHEMA)
    swap = _swap_overall(summary) if summary else None
    if swap is not None:
        figures.append((readings.share(swap), "class-swap success"))
    rows = _result_rows(_results(sources.evaluate))
    aopc, subject = _column(rows, "aopc"), cae_subject(rows)
    if subject is not None and readings.finite(aopc.get(subject)):
        figures.append((fixed(aopc[subject]), f"{subject} AOPC"))
    if figures:
        section.parts.append(kpis_html(figures))
    stages = [(name, _read_json(sources.root / name / "stage.json", STAGE_SCHEMA)) for name in STAGE_FOLDERS]
    stage_rows = [[name, marker.get("status", "?"),
                   f"{marker['seconds']:.1f}" if readings.finite(marker.get("seconds")) else MISSING]
                  for name, marker in stages if marker]
    if stage_rows:
        section.parts.append(table_html(["stage", "status", "seconds"], stage_rows, caption="stages of the run"))
    if not section.parts:  # a CAE run folder alone: say what brings the headline figures
        section.missing.append("no headline figures found: they come from --classifier CLF, --manifold DIR and "
                               "--evaluate DIR")
    return section


def _data_from_manifold(sources: ReportSources) -> dict[str, Any] | None:
    """The data set's description as the manifold analysis recorded it (a CAE run has no ``dataset.json``)."""
    summary = None if sources.manifold is None else _read_json(sources.manifold / "summary.json", MANIFOLD_SCHEMA)
    counts = (summary or {}).get("counts", {})
    if not summary or "class_names" not in summary or not {"train_per_class", "test_per_class"} <= set(counts):
        return None
    config = None if sources.cae is None else _read_json(sources.cae / "config.json", {"config": {"image_size": int}})
    return {"spec": summary.get("data", "The data"), "class_names": summary["class_names"],
            "image_size": (config or {}).get("config", {}).get("image_size", "?"),
            "class_counts": {"train": counts["train_per_class"], "test": counts["test_per_class"]}}


def data_section(sources: ReportSources) -> Section:
    section = Section("data", "Data", "Training samples per class (ground-truth lesion masks, where the data has "
                                      "them, drawn as a light outline with a dark edge).")
    if sources.data is None:  # a CAE run folder: `caex train` keeps no picture of the data set
        section.missing.append("samples per class (only a `caex demo` folder holds data/samples.png; "
                               "`caex data show DATA --out samples.png` draws them)")
    else:
        section.figure(sources.data, "samples.png", "samples per class (masks outlined)",
                       alt="grid of training images, one row per class")
    info = None if sources.data is None else _read_json(sources.data / "dataset.json", DATASET_SCHEMA)
    info = info or _data_from_manifold(sources)
    if info is None:
        section.missing.append(f"data set description ({_where(sources.data, 'dataset.json')} not found or "
                               "unreadable, and no manifold summary to read the counts from)")
    else:
        names = info.get("class_names", [])
        train, test = (info.get("class_counts", {}).get(split, [0] * len(names)) for split in ("train", "test"))
        section.parts.append(table_html(["class", "train images", "test images"], list(zip(names, train, test)),
                                        caption="images per class"))
        section.reading(f"{info.get('spec', 'The data')}: {sum(train)} training and {sum(test)} test images of "
                        f"{info.get('image_size', '?')} px.")
    return section


def classifier_section(sources: ReportSources) -> Section:
    section = Section("classifier", "Classifier", "The black box being explained.")
    if section.not_given(sources.classifier, "--classifier CLF", "caex train-classifier"):
        return section
    info = _json_or_missing(section, sources.classifier, "classifier.json", "classifier description",
                            CLASSIFIER_SCHEMA)
    if info:
        rows: list[list[Any]] = [
            ["architecture", info.get("arch")], ["image size", info.get("image_size")],
            ["channels", info.get("channels")], ["classes", ", ".join(info.get("class_names", []))],
            ["test accuracy", percent(info.get("test_accuracy"))]]
        section.parts.append(table_html(["property", "value"], rows, caption="the classifier"))
        data = _data_from_manifold(sources) or {}  # the split it was tested on: its own record, or a summary's
        same_data = same_data_spec(data.get("spec"), info.get("data_spec"), by_name=False)  # no warning shows both
        test_counts = info.get("test_class_counts") or (data.get("class_counts", {}).get("test") if same_data else None)
        section.reading(readings.read_accuracy(info.get("test_accuracy", float("nan")),
                                               len(info.get("class_names", [])) or 2, test_counts))
    return section


def training_section(sources: ReportSources) -> Section:
    section = Section("training", "CAE training",
                      "Every loss term of the BBCFE objective over the run, then the trainer's latest grid of "
                      "reconstructions and class swaps.")
    log = None if sources.cae is None else sources.cae / "log.jsonl"
    curves = training_curves_png(read_training_log(log)) if log is not None and log.is_file() else None
    if curves is None:
        section.missing.append(f"training curves ({_where(sources.cae, 'log.jsonl')} not found or empty)")
    else:
        section.parts.append(figure_html(curves, "loss terms against iteration (bold: a moving average, or the raw "
                                                 "values of a short run), and the class codes' separation where it "
                                                 "was measured (code_accuracy, code_gap)",
                                         alt="training curves, one panel per loss term"))
    run = None if sources.cae is None else _read_json(sources.cae / "summary.json", TRAINING_SCHEMA)
    if run:
        speed = run.get("images_per_second")
        section.parts.append(table_html(["iterations", "training seconds", "images / s", "reconstruction L1 (test)"],
                                        [[run.get("iters"), run.get("seconds"),
                                          f"{speed:,.1f}" if readings.finite(speed) else speed, run.get("recon_l1")]],
                                        caption="the training run"))
        seconds, recon = run.get("seconds"), run.get("recon_l1")
        reading = f"{run.get('iters', '?')} iterations" + (
            f" in {seconds:.0f} s of training (its own clock: setup, sample grids and saving not counted)"
            if readings.finite(seconds) else "")
        if isinstance(run.get("iters"), int) and run.get("iters_asked", 0) > run["iters"]:  # a time-limit stop
            reading += f", stopped by its time limit before the {run['iters_asked']:,} asked for"
        if readings.finite(recon):
            reading += (f"; reconstructions of held-out images differ from the originals by {recon:.3f} on average "
                        "(L1 on the [-1, 1] scale; 0 is perfect)")
        section.reading(reading + ".")
    unfinished = _unfinished_model(sources)
    if unfinished:
        section.missing.append(unfinished)
    grids = sorted((sources.cae / "samples").glob("*.png")) if sources.cae is not None else []
    if grids:
        section.parts.append(figure_html(grids[-1].read_bytes(),
                                         f"{grids[-1].stem}: one training image per class (columns, the first "
                                         f"{SAMPLE_CLASSES} classes at most): originals (row 1), reconstructions "
                                         "(row 2), then every original decoded with column k's class code "
                                         "(row k + 2)",
                                         enlarge=True, alt="grid of reconstructions and class swaps"))
    else:
        section.missing.append(f"reconstruction/swap grid ({_where(sources.cae, 'samples/*.png')} not found)")
    return section


def _unfinished_model(sources: ReportSources) -> str | None:
    """What says that a CAE run folder holds no finished model (a run still training, or stopped: its log and grids
    alone read like a finished run's), with how to continue it, or that a finished one has no training summary (a
    CAE saved with ``CAE.save``, which writes none); ``None`` where both are there. A demo's stages say so in the
    overview (``stage.json``)."""
    if sources.cae is None or sources.cae != sources.root:
        return None
    if not (sources.cae / CAE_CONFIG_FILE).is_file():  # written last by the model's save
        return (f"no finished model yet ({_where(sources.cae, CAE_CONFIG_FILE)} not found): the run is still "
                "training or was stopped (`caex train --resume` continues it)")
    if (sources.cae / SUMMARY_FILE).is_file():
        return None
    if (sources.cae / CHECKPOINT_FILE).is_file():  # a training run whose final save was cut short
        return (f"the training summary ({_where(sources.cae, SUMMARY_FILE)} not found): the final save of the run was "
                "cut short (`caex train --resume` finishes it)")
    return f"the training summary ({_where(sources.cae, SUMMARY_FILE)} not found; CAE.save writes none)"


def _swap_overall(summary: dict[str, Any]) -> float | None:
    value = summary.get("swap", {}).get("mean")
    return float(value) if readings.finite(value) else None


def manifold_section(sources: ReportSources) -> Section:
    summary = None if sources.manifold is None else _read_json(sources.manifold / "summary.json", MANIFOLD_SCHEMA)
    dims = (summary or {}).get("code_dim")
    section = Section("manifold", "The class-code manifold",
                      f"Every image's {f'{dims}-number ' if dims else ''}class code, projected to 2-D (train and "
                      "test side by side), and what the codes allow: separating the classes, swapping them, "
                      "moving smoothly between them.")
    if section.not_given(sources.manifold, "--manifold DIR", "caex manifold"):
        return section
    # Only what this analysis wrote, where its summary lists it: a rerun with --no-tsne left the earlier run's
    # t-SNE map in the folder, and the report showed it beside this run's numbers
    listed = set((summary or {}).get("files", {}).values())

    def drawn(name: str) -> bool:
        return not listed or name in listed

    section.figure(sources.manifold, "map_pca.png", "class codes, PCA", alt="class-code map, PCA")
    if drawn("map_tsne.png"):
        section.figure(sources.manifold, "map_tsne.png", "class codes, t-SNE", alt="class-code map, t-SNE")
    if (sources.manifold / "map_umap.png").is_file() and drawn("map_umap.png"):  # only where umap is installed
        section.figure(sources.manifold, "map_umap.png", "class codes, UMAP", alt="class-code map, UMAP")
    if (sources.manifold / "maps.html").is_file() and drawn("maps.html"):  # its own page: the report stays one file
        section.parts.append(f"<p>The same maps to explore, each point named on hover: "
                             f"{_link(sources.manifold / 'maps.html', sources.report_file)} (opens offline).</p>")
    if drawn("paths.png"):
        section.figure(sources.manifold, "paths.png",
                       "straight paths between classes (as in the paper's Fig. 11): numbers are the classifier's "
                       "probability of the target class", alt="decoded images along straight paths between classes")
    if summary:
        _manifold_tables(section, summary)
    else:
        section.missing.append(f"manifold tables ({sources.manifold / 'summary.json'} not found or unreadable)")
    return section


#: Rows of the separability table: summary key -> what the features are.
SEPARABILITY_ROWS = {"class_codes": "CAE class codes", "pixel_pca": "raw pixels, PCA",
                     "classifier_features": "classifier features"}


def _manifold_tables(section: Section, summary: dict[str, Any]) -> None:
    """The separability, swap and smoothness tables of ``summary.json``, each with its reading."""
    class_names = summary.get("class_names", [])
    separability = summary.get("separability", {})
    rows = [[label, percent(entry.get("mean")), percent(entry.get("std")), percent(entry.get("balanced")),
             entry.get("dims"), entry.get("folds")]
            for key, label in SEPARABILITY_ROWS.items()
            if (entry := separability.get(key)) is not None and not entry.get("skipped")]
    if rows:  # balanced accuracy: 1/K for a forest that names the commonest class, which accuracy hides
        section.parts.append("<h3>Separability (random forest on the test set)</h3>"
                             + table_html(["features", "accuracy", "std", "balanced accuracy", "dims", "folds"], rows,
                                          caption="the class recovered from each kind of features"))
        codes, pixels = separability.get("class_codes", {}), separability.get("pixel_pca", {})
        section.reading(readings.read_separability(
            codes.get("mean"), dims=codes.get("dims"), folds=codes.get("folds"),
            pixel_accuracy=pixels.get("mean"),
            chance=readings.chance_text(len(class_names), summary.get("counts", {}).get("test_per_class"))
            if class_names else None))
    matrix = summary.get("swap", {}).get("matrix")
    if matrix and class_names and _is_square(matrix, len(class_names)):
        rows = [[f"from {name}", *map(percent, row)] for name, row in zip(class_names, matrix)]
        section.parts.append("<h3>Class-swap success</h3>"
                             + table_html(["from \\ to", *[f"to {name}" for name in class_names]], rows,
                                          caption="swaps the classifier reads as the new class, by direction",
                                          row_headers=True))
        section.reading(readings.read_swap(matrix, class_names, _swap_overall(summary)))
    per_class = summary.get("smoothness", {}).get("per_class", {})
    monotone = summary.get("paths", {}).get("monotone_share")
    if per_class or monotone is not None:
        rows = [[name, percent(value)] for name, value in per_class.items()]
        section.parts.append("<h3>Smoothness</h3>"
                             + table_html(["class", "decoded SMOTE codes kept in class"], rows,
                                          caption="mixtures of same-class codes that keep their class"))
        section.reading(readings.read_smoothness(per_class, monotone))


def _is_square(matrix: list[list[Any]], size: int) -> bool:
    """Whether ``matrix`` has one row and column per class: cell ``[i][j]`` only means ``i → j`` then."""
    return len(matrix) == size and all(len(row) == size for row in matrix)


#: Explanation examples embedded at most (the first by file name; the demo writes up to 24): each brings two inline
#: PNGs, so a ``caex explain`` folder of hundreds of images would make a page of tens of MB.
MAX_EXAMPLES = 24


SUMMARY_SCHEMA = {"source": str, "caption": str, "prediction": {"class": str}, "target": {"class": str},
                  "flip_step": int}


def _summary_titles(summaries: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Captions of ``caex explain`` outputs from their ``<stem>.json`` summaries: the image by its path below the
    inputs' common folder (the stems ``001``, ``001-2`` did not say which ``001.png`` was which), then the overlay's
    own caption as the summary records it, or as it reads for a summary saved before summaries held it."""
    captions = {}
    for stem, summary in summaries.items():
        caption = summary.get("caption") or _caption_of_an_older_summary(summary)
        if "source" in summary and caption:
            captions[stem] = (summary["source"], caption)
    try:
        root = os.path.commonpath([os.path.dirname(source) for source, _ in captions.values()])
    except ValueError:  # none, relative beside absolute paths (hand-made files), or on two drives (Windows)
        root = ""
    return {stem: f"{_below(source, root)}: {caption}" for stem, (source, caption) in captions.items()}


def _below(source: str, root: str) -> str:
    """``source`` relative to ``root`` (where empty, the working folder), or in full where no relative path leads
    there: on Windows, a source on another drive than the working folder."""
    try:
        return os.path.relpath(source, root or None)
    except ValueError:
        return source


def _caption_of_an_older_summary(summary: dict[str, Any]) -> str | None:
    prediction, target = summary.get("prediction", {}).get("class"), summary.get("target", {}).get("class")
    flip = summary.get("flip_step")
    if target is None or flip is None:
        return None
    return overlay_caption(prediction or NO_CLASS, target, flip, flipped=flip >= 0)


def _example_html(title: str, overlay: Path, strip: Path | None, subject: str, flip_step: int) -> str:
    """One explanation in its own box, the caption first (it read as the caption of the next example's map): the
    saliency map, then the counterfactual strip at its own size in a box that scrolls sideways, focusable so that a
    keyboard scrolls it too. The alt texts say in a few words what each picture is (of ``subject``: the image and,
    where known, the class its path heads for); the caption says the rest."""
    flips = f", {flip_words(flip_step)}" if flip_step >= 0 else ""
    pictures = _img_html(overlay, "map", f"saliency map of {subject}")
    if strip is not None:
        pictures += (f'<div class="strip-scroll" tabindex="0" role="region" '
                     f'aria-label="{html.escape(f"counterfactual path of {subject}, scrolls sideways")}">'
                     f'{_img_html(strip, "strip", f"counterfactual path of {subject}{flips}")}</div>')
    return f'<figure class="example"><figcaption>{html.escape(title)}</figcaption>{pictures}</figure>'


def _img_html(path: Path, css_class: str, alt: str) -> str:
    return f'<img class="{css_class}" src="{png_data_uri(path.read_bytes())}" alt="{html.escape(alt)}">'


def explain_section(sources: ReportSources) -> Section:
    """Saliency overlay and counterfactual strip per example, from the demo or ``caex explain`` outputs."""
    section = Section("explanations", "Local explanations",
                      "For a few test images: the saliency map and, below it, the counterfactual path toward "
                      "another class that it is built from, each frame captioned with the classifier's "
                      "probability of that class (where the decision flips, the frame is bordered in red and "
                      "its caption ends in \"flip\").")
    folder = sources.explain
    if section.not_given(folder, "--explain DIR", "caex explain"):
        return section
    overlay_suffix, strip_suffix = EXPLAIN_OUTPUTS["overlay"], EXPLAIN_OUTPUTS["strip"]
    overlays = sorted(folder.glob(f"*{overlay_suffix}"))
    if not overlays:
        section.missing.append(f"explanation figures ({_where(folder, f'*{overlay_suffix}')} not found)")
        return section
    index = _read_json(folder / "explanations.json", EXPLANATIONS_SCHEMA) or {}
    examples = index.get("examples", [])
    indexed = {example["stem"]: example for example in examples if "stem" in example}
    shown = overlays[:MAX_EXAMPLES]
    stems = [overlay.name.removesuffix(overlay_suffix) for overlay in shown]
    summaries = {stem: _read_json(folder / f"{stem}.json", SUMMARY_SCHEMA) or {} for stem in stems
                 if stem not in indexed}  # read only where the demo's index does not describe the example
    titles = _summary_titles(summaries) | {stem: example.get("title", "") for stem, example in indexed.items()}
    facts = summaries | indexed  # either names the source image and the flip step
    for overlay, stem in zip(shown, stems, strict=True):
        strip = folder / f"{stem}{strip_suffix}"
        fact = facts.get(stem, {})
        prediction, target = ((fact.get(key) or {}).get("class") for key in ("prediction", "target"))
        subject = (Path(fact["source"]).name if "source" in fact else stem) + (f" toward {target}" if target else "")
        flip = shown_flip(prediction or NO_CLASS, target, fact.get("flip_step", -1))  # as captioned
        section.parts.append(_example_html(titles.get(stem) or stem, overlay, strip if strip.is_file() else None,
                                           subject, flip))
    if len(overlays) > MAX_EXAMPLES:
        section.parts.append(f"<p>The first {MAX_EXAMPLES} of {len(overlays)} explanations (by file name); all of "
                             f"them are in {html.escape(str(folder))}.</p>")
    flips = [example["flip_step"] for example in examples if "flip_step" in example]
    if flips:
        section.reading(readings.read_flips(flips, index.get("steps")))
    return section


#: Columns of the results table: results.json key -> heading (arrows: which way is better).
RESULT_COLUMNS = {"aopc": "AOPC ↑", "peak_degradation": "PD ↑", "pointing": "pointing game ↑",
                  "mass_in_mask": "mass in mask ↑", "iou": "top-k IoU ↑", "ms_per_image": "ms / image ↓"}
def _cell(key: str, value: Any, row: dict[str, Any]) -> Any:
    """A results cell: times to 0.1 ms (two significant digits below that), AOPC with its standard error."""
    if key == "ms_per_image" and readings.finite(value):
        return f"{value:,.1f}" if value >= 0.1 else f"{value:.2g}"
    if key == "aopc" and readings.finite(value) and readings.finite(row.get("aopc_se")):
        return f"{fixed(value)} ± {row['aopc_se']:.3f}"
    return value


#: What the report reads of ``results.json`` (the other files' schemas are above the sections).
RESULTS_SCHEMA = {"settings": {"n_images": int, "n_patches": int, "patch": int, "fill": str, "device": str,
                               "has_masks": bool, "n_with_mask": int, "cae": {str: str}, "interrupted": bool,
                               "class_names": [str], "images_per_class": {str: int}, "ranking": str,
                               "method_options": {str: {str: (bool, int, float, str, None)}}},
                  "methods": [{"method": str, "status": str, "reason": str, "aopc_se": float,
                               "aopc_per_image": [float], "aopc_per_class": {str: float},
                               **dict.fromkeys(RESULT_COLUMNS, float)}]}


def _results(folder: Path | None) -> dict[str, Any]:
    """What the report reads of ``results.json`` (empty when absent)."""
    return (None if folder is None else _read_json(folder / "results.json", RESULTS_SCHEMA)) or {}


def _result_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-method rows of ``results.json`` that name their method."""
    return [row for row in results.get("methods", []) if "method" in row]


def cae_subject(rows: list[dict[str, Any]]) -> str | None:
    """The one CAE row every sentence and headline is about: plain ``cae`` if it ran, else the CAE variant with
    the highest AOPC (the sentences then all name it, never one variant here and another there)."""
    ran = [row for row in rows if row.get("status", "ok") == "ok" and readings.is_variant_of(str(row["method"]), "cae")]
    if not ran:
        return None
    plain = next((row for row in ran if str(row["method"]).lower() == "cae"), None)
    best = plain or max(ran, key=lambda row: row["aopc"] if readings.finite(row.get("aopc")) else -math.inf)
    return method_name(str(best["method"]))


def _column(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """``{method: value}`` of one metric over the methods that ran."""
    return {method_name(str(row["method"])): row[key] for row in rows
            if row.get("status", "ok") == "ok" and readings.finite(row.get(key))}


def evaluation_section(sources: ReportSources) -> Section:
    section = Section("evaluation", "Faithfulness and localisation against the baselines",
                      "Every method explains the same test images of the same classifier. AOPC and PD: how fast "
                      "the classifier's confidence drops as the most salient patches are covered with noise "
                      "(higher is better); localisation: how much saliency falls inside the true lesion. In the "
                      "results table, ↑ marks a column where higher is better, ↓ one where lower is better.")
    if section.not_given(sources.evaluate, "--evaluate DIR", "caex evaluate"):
        return section
    results = _results(sources.evaluate)
    settings = results.get("settings", {})
    masks = settings.get("has_masks", True)
    section.figure(sources.evaluate, "gallery.png",
                   "saliency maps of every method"
                   + (f"; ground-truth {MASK_LEGEND}" if masks else ""),
                   alt="grid of saliency maps, one column per method")
    section.figure(sources.evaluate, "curves.png", "mean drop of the true class's probability as patches are covered",
                   alt="deletion curves, one line per method")
    rows = _result_rows(results)
    if not rows:
        section.missing.append(f"results table ({_where(sources.evaluate, 'results.json')} not found or empty)")
        return section
    ran = [row for row in rows if row.get("status", "ok") == "ok"]
    columns = [key for key in RESULT_COLUMNS if any(readings.finite(row.get(key)) for row in ran)]
    section.parts.append("<h3>Results</h3>" + table_html(
        ["method", *(RESULT_COLUMNS[key] for key in columns)],
        [[method_name(row["method"]), *(_cell(key, row.get(key), row) for key in columns)] for row in ran],
        highlight="CAE", caption="each method's scores on the same images"))
    if settings:
        with_errors = any(readings.finite(row.get("aopc_se")) for row in ran)
        section.parts.append(f'<p class="lead">{html.escape(_evaluation_setup(settings, with_errors))}</p>')
    if settings.get("interrupted"):
        section.parts.append("<p><b>This evaluation was interrupted: only the methods in the table ran.</b></p>")
    skipped = [f"{method_name(row['method'])}: {row.get('reason', 'skipped')}" for row in rows if row not in ran]
    if skipped:
        section.parts.append("<p>" + html.escape("; ".join(skipped)) + "</p>")
    by_class = [row for row in ran if row.get("aopc_per_class")]
    found = list(dict.fromkeys(name for row in by_class for name in row["aopc_per_class"]))
    classes = [name for name in settings.get("class_names", []) if name in found]  # the model's order, then
    classes += [name for name in found if name not in classes]  # (an older results.json) as the rows list them
    if len(classes) > 1:  # where a method fails on one class, which the mean over the classes hides
        section.parts.append("<h3>AOPC per class</h3>" + table_html(
            ["method", *(with_count(name, settings.get("images_per_class", {})) for name in classes)],
            [[method_name(row["method"]), *(row["aopc_per_class"].get(name, MISSING) for name in classes)]
             for row in by_class],
            highlight="CAE", caption="each method's AOPC on the images of each class"))
    subject = cae_subject(ran)
    if "aopc" in columns:
        per_image = {method_name(str(row["method"])): row["aopc_per_image"] for row in ran if "aopc_per_image" in row}
        section.reading(readings.read_faithfulness(_column(ran, "aopc"), metric="AOPC", subject=subject,
                                                   per_image=per_image))
    if "peak_degradation" in columns:
        section.reading(readings.read_faithfulness(_column(ran, "peak_degradation"), metric="PD", subject=subject))
    if "mass_in_mask" in columns:
        section.reading(readings.read_localisation(_column(ran, "mass_in_mask"), _column(ran, "pointing"),
                                                   subject=subject, n_with_mask=settings.get("n_with_mask")))
    elif not masks:
        section.reading("The data has no ground-truth lesion masks, so localisation was not measured.")
    if "ms_per_image" in columns:
        section.reading(readings.read_time(_column(ran, "ms_per_image"), subject=subject))
    return section


def _evaluation_setup(settings: dict[str, Any], with_errors: bool) -> str:
    """One line saying what the numbers were measured on."""
    parts = [f"{settings.get('n_images', '?')} correctly classified test images"]
    if "n_patches" in settings and "patch" in settings:
        parts.append(f"up to {settings['n_patches']} patches of {settings['patch']}x{settings['patch']} px covered")
    if "fill" in settings:
        parts.append(f"fill: {settings['fill']}")
    if "device" in settings:
        parts.append(f"timed on {settings['device']}")
    paths = sorted({f"{method_name(name)}: {description}" for name, description in settings.get("cae", {}).items()})
    cae = f" CAE maps ({'; '.join(paths)})." if paths else ""
    errors = "; AOPC ± its standard error over the images" if with_errors else ""
    if settings.get("method_options"):
        parts.append(f"method options: {options_text(settings['method_options'])}")
    older = ("" if "ranking" in settings else " Measured by an earlier caex, which ranked tied pixels and signed maps "
             "(LIME, occlusion) differently: rerun caex evaluate before comparing these with newer results.")
    return "Measured on " + "; ".join(parts) + errors + "." + cae + older


#: What the settings section reads of each stage's files (the figures' own schemas read them for the rest).
TRAIN_SETTINGS_SCHEMA = {"iters": int, "batch_size": int, "lr": float, "seed": int, "dc": str, "labels": str}
CAE_SETTINGS_SCHEMA = {"config": {"image_size": int, "code_dim": int, "width": int}, "data_spec": str,
                       "data_seed": int}
CLASSIFIER_SETTINGS_SCHEMA = {"arch": str, "data_spec": str, "data_seed": int}
MANIFOLD_SETTINGS_SCHEMA = {"seed": int, "swap": {"pairs_per_class_pair": int},
                            "smoothness": {"samples_per_class": int}, "paths": {"count": int, "steps": int}}
EVALUATION_SETTINGS_SCHEMA = {"settings": {"data": str, "n_images": int, "seed": int, "batch_size": int}}


def settings_section(sources: ReportSources) -> Section:
    """Every setting the figures above depend on, stage by stage, and what they cannot tell."""
    section = Section("settings", "Settings and limits",
                      "How each stage was run, as its own files record it, so that the figures can be reproduced.")
    rows: list[list[Any]] = []

    def add(stage: str, folder: Path | None, name: str, schema: Schema,
            fields: list[tuple[str, Callable[[dict[str, Any]], Any]]]) -> None:
        content = None if folder is None else _read_json(folder / name, schema)
        if not content:
            return
        for label, pick in fields:
            with contextlib.suppress(KeyError):
                rows.append([stage, label, pick(content)])

    add("CAE training", sources.cae, "train_config.json", TRAIN_SETTINGS_SCHEMA,
        [("iterations", lambda c: c["iters"]), ("batch size (pairs)", lambda c: c["batch_size"]),
         ("learning rate", lambda c: c["lr"]), ("seed", lambda c: c["seed"]),
         ("class critic", lambda c: c["dc"]), ("labels", lambda c: c["labels"])])
    add("CAE", sources.cae, "config.json", CAE_SETTINGS_SCHEMA,
        [("data", lambda c: c["data_spec"]), ("split seed", lambda c: c["data_seed"]),
         ("image size (px)", lambda c: c["config"]["image_size"]),
         ("class code length", lambda c: c["config"]["code_dim"]), ("network width", lambda c: c["config"]["width"])])
    add("classifier", sources.classifier, "classifier.json", CLASSIFIER_SETTINGS_SCHEMA,
        [("architecture", lambda c: c["arch"]), ("data", lambda c: c["data_spec"]),
         ("split seed", lambda c: c["data_seed"])])
    add("global analysis", sources.manifold, "summary.json", MANIFOLD_SETTINGS_SCHEMA,
        [("seed", lambda c: c["seed"]), ("swap pairs per class pair", lambda c: c["swap"]["pairs_per_class_pair"]),
         ("code mixtures per class", lambda c: c["smoothness"]["samples_per_class"]),
         ("inter-class paths", lambda c: f"{c['paths']['count']}, of {c['paths']['steps']} steps each")])
    add("evaluation", sources.evaluate, "results.json", EVALUATION_SETTINGS_SCHEMA,
        [("data", lambda c: c["settings"]["data"]), ("images", lambda c: c["settings"]["n_images"]),
         ("seed", lambda c: c["settings"]["seed"]), ("batch size", lambda c: c["settings"]["batch_size"])])
    recorded = _recorded_models(sources)
    rows += [[stage, f"{model} weights (digest)", digest] for stage, model, digest in recorded]
    if rows:
        section.parts.append(table_html(["stage", "setting", "value"], rows, caption="settings of each stage"))
    else:
        section.missing.append("no stage recorded its settings")
    digests: dict[str, set[str]] = {"CAE": set(), "classifier": set()}
    for _, model, digest in recorded:
        digests[model].add(digest)
    mixed = [model for model, seen in digests.items() if len(seen) > 1]
    if mixed:
        section.reading(f"Warning: these results were made by more than one {' and more than one '.join(mixed)} "
                        "(their weight digests differ, in the table above): the sections do not describe one model, "
                        "and should not be read or compared as if they did.")
        return section
    section.reading("Every figure here comes from one trained CAE and one classifier, each from one seed, on the "
                    "images listed: the AOPCs' standard errors (where shown) say how far they could move with other "
                    "images of the same kind, not with another training run. Train again with other seeds to see that "
                    "spread, and judge a small test set or a synthetic one accordingly.")
    return section


#: Where results record the models that made them (caex.utils.provenance.run_record).
PROVENANCE_SCHEMA = {"cae": {"digest": str}, "classifier": {"digest": str}}


def _recorded_models(sources: ReportSources) -> list[tuple[str, str, str]]:
    """``(stage, "CAE" | "classifier", weight digest)`` for the report's own CAE run and classifier and for each
    model a result folder records (explanations: every distinct one their summaries name), so that a report over
    folders made by other models can say so."""
    from caex.classifier import load_classifier
    from caex.model import CAE
    from caex.utils.provenance import cae_digest, classifier_digest

    records: list[tuple[str, dict[str, Any] | None]] = []
    if sources.manifold is not None:
        records.append(("global analysis", _read_json(sources.manifold / "summary.json",
                                                      {"provenance": PROVENANCE_SCHEMA})))
    if sources.explain is not None:
        suffix = EXPLAIN_OUTPUTS["overlay"]
        records += [("explanations", _read_json(overlay.with_name(overlay.name.removesuffix(suffix) + ".json"),
                                                {"provenance": PROVENANCE_SCHEMA}))
                    for overlay in sorted(sources.explain.glob(f"*{suffix}"))]
    if sources.evaluate is not None:
        results = _read_json(sources.evaluate / "results.json", {"settings": {"provenance": PROVENANCE_SCHEMA}})
        records.append(("evaluation", (results or {}).get("settings")))
    bundle = _digest_of(sources.classifier, lambda folder: classifier_digest(load_classifier(folder, device="cpu")))
    # the bundle's ONNX export holds the same weights, known by its file's digest: results made with it are its;
    # read only where a result names another classifier than the bundle (an ONNX session takes a second)
    export = functools.cache(lambda: _digest_of(sources.classifier, lambda folder: classifier_digest(
        load_classifier(folder / ONNX_FILE, device="cpu")) if (folder / ONNX_FILE).is_file() else None))
    found = [("CAE run", "CAE", _digest_of(sources.cae, lambda folder: cae_digest(CAE.load(folder, device="cpu")))),
             ("classifier", "classifier", bundle)]
    for stage, content in records:
        recorded = (content or {}).get("provenance") or {}
        found.append((stage, "CAE", (recorded.get("cae") or {}).get("digest")))
        digest = (recorded.get("classifier") or {}).get("digest")
        if digest not in (None, bundle) and digest == export():
            found.append((f"{stage} (ONNX export)", "classifier", bundle))
        else:
            found.append((stage, "classifier", digest))
    return list(dict.fromkeys((stage, label, digest) for stage, label, digest in found if digest))


def _digest_of(folder: Path | None, digest: Callable[[Path], str | None]) -> str | None:
    """The weight digest of the model in ``folder``, or ``None`` where there is none that loads (a partial run,
    an ONNX model without onnxruntime): the report shows what it can."""
    if folder is None:
        return None
    try:
        return digest(folder)
    except (CaexError, OSError):
        return None


SECTIONS: tuple[Callable[[ReportSources], Section], ...] = (
    overview_section, data_section, classifier_section, training_section, manifold_section,
    explain_section, evaluation_section, settings_section,
)


def _data_spec(sources: ReportSources) -> str | None:
    """The data the run explains, from whichever stage recorded it (for the page's title)."""
    for folder, name, schema, pick in (
            (sources.data, "dataset.json", {"spec": str}, lambda c: c["spec"]),
            (sources.cae, "config.json", {"data_spec": str}, lambda c: c["data_spec"]),
            (sources.manifold, "summary.json", {"data": str}, lambda c: c["data"])):
        content = None if folder is None else _read_json(folder / name, schema)
        if content:
            return pick(content)
    return None


def render_report(sources: ReportSources) -> str:
    """The complete HTML page for ``sources``."""
    sections = [build(sources) for build in SECTIONS]
    nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)  # wraps when narrow
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    spec = _data_spec(sources)
    return PAGE.format(
        title=html.escape(sources.title + (f" ({spec})" if spec else "")), style=STYLE, nav=nav,
        subtitle=html.escape(f"Why the classifier decides as it does, explained with Class Association Embedding: "
                             f"the run in {sources.root.resolve().name}/"),
        body="\n".join(section.render() for section in sections),
        footer=html.escape(f"generated by caex {__version__} on {stamp}; self-contained, opens offline"),
    )


def build_report(run: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 manifold: str | os.PathLike | None = None, explain: str | os.PathLike | None = None,
                 evaluate: str | os.PathLike | None = None, classifier: str | os.PathLike | None = None) -> Path:
    """Write the report for ``run`` to ``out`` (default ``RUN/report.html``) atomically; returns its path."""
    sources = ReportSources.from_run(run, manifold=manifold, explain=explain, evaluate=evaluate,
                                     classifier=classifier)
    target = Path(out) if out is not None else sources.root / REPORT_FILE
    sources.report_file = target
    if target.is_dir():
        raise CaexError(f"cannot write {target}: it is a folder (give the HTML file to write)")
    if target.suffix.lower() not in (".html", ".htm"):  # a scan named as the output would be overwritten
        raise CaexError(f"cannot write {target}: the report is an HTML file; name it *.html")
    page = render_report(sources)
    try:
        return atomic_write_text(target, page)
    except OSError as exc:
        raise CaexError(f"cannot write {target} ({exc.strerror or exc})") from None
