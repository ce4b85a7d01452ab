"""User-facing errors.

Anything a user can cause (a bad path, a corrupt file, an unknown spec) raises
:class:`CaexError` with one line that names the file or value and what is wrong.
The CLI prints that line and exits non-zero; programming errors keep their
tracebacks.
"""

from __future__ import annotations


class CaexError(Exception):
    """A problem with the user's input, reported as one clear line."""

    exit_code = 2


class DataError(CaexError):
    """A data source cannot be read or does not make a usable data set."""


class ClassifierError(CaexError):
    """A classifier file is missing, unreadable or does not match the data."""


class ModelError(CaexError):
    """A CAE run folder or bundle is missing or inconsistent."""


class TrainingError(CaexError):
    """Training cannot continue (e.g. a loss became non-finite)."""


class Interrupted(CaexError):
    """A long job stopped on request (a signal) after saving its progress; ``exit_code`` is 128 + the signal."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class OtherRankFailed(CaexError):
    """Under ``torchrun``: this process stops because another process of the job failed (that one prints why);
    the CLI says nothing more for it, so a job's error is one line, not one per process."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or ``kill``'s stop), raised by the CLI where Ctrl-C would be so that the same
    clean-up runs and the command ends with one line and exit 143 instead of dying silently."""


class EvaluationError(CaexError):
    """The evaluation was asked for something it cannot do (unknown method, no usable images, bad settings)."""
