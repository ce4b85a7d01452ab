"""Atomic file writes (a kill at any moment leaves either the old or the new file) and a folder lock."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from caex.errors import CaexError
from caex.utils.warn import warn

if TYPE_CHECKING:
    import torch


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, read whole: ``safetensors.torch.load_file`` (0.8) keeps about 2 KB
    for good per call, which a service loading a model per request piles up."""
    from safetensors.torch import load

    return load(path.read_bytes())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = _new_temporary_file(path)
    except OSError as exc:  # a read-only folder: name the file asked for, not the temporary one
        exc.filename = str(path)
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename in (None, tmp):
            # a full disk fails the write naming no file, and a failed rename names the hidden temporary one;
            # the CLI's one line names the file asked for
            exc.filename, exc.filename2 = str(path), None
        raise
    return path


def _new_temporary_file(path: Path) -> tuple[int, str]:
    """A new hidden file beside ``path``, opened for writing, with the permissions the umask gives any other file
    (``tempfile.mkstemp`` makes it private, and reading the umask to widen it means setting it, for every thread)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` as UTF-8 through :func:`atomic_write_bytes`, so an interrupted write leaves the old file whole. A
    path or class name read under an ASCII locale holds its other bytes as surrogates: they are written back as
    those bytes (the name's own UTF-8), where a finished evaluation was lost to UnicodeEncodeError."""
    return atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as JSON, non-finite floats as ``null`` (see :func:`json_safe`), other alphabets as themselves: a
    class named "über" was written ``"\\u00fcber"``, which ``grep über`` did not find. A path that is no UTF-8 (a
    Latin-1 folder name, or any name under an ASCII locale) holds surrogates, kept as ``\\udce4`` escapes: written
    as their bytes, they made a file no JSON reader, caex included, could read."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False, ensure_ascii=False)
    return atomic_write_text(path, _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text) + "\n")


#: A lone surrogate, which only a string of a file name that is no UTF-8 holds (see :func:`write_json`).
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float, however deep, as ``None``: JSON has no NaN (Python writes one
    that browsers and most readers refuse), and an undefined figure (an empty class pair) is a null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    return obj


def newer_format(version: object, newest: int, what: str = "format version") -> str | None:
    """Why a file of format ``version`` is not for this caex, which reads up to ``newest`` (``None``: it is): a
    newer caex's file is refused, never misread."""
    if type(version) is int and version <= newest:
        return None
    return f"written by a newer caex ({what} {version!r}, this caex reads {newest}); upgrade caex"


def read_json(path: str | os.PathLike) -> Any:
    """The JSON file ``path`` read as UTF-8 (whatever the locale's encoding, as :func:`write_json` wrote it)."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


#: The advisory lock file a long job holds in its output folder while it runs (see :func:`folder_lock`).
LOCK_FILE = ".caex.lock"
#: What ``flock`` raises on a file system without it (Lustre mounted noflock, some NFS): every writing command
#: failed there, so such a folder goes unguarded, as on a platform without ``flock``.
FLOCK_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOLCK, errno.EINVAL})


@contextmanager
def replaced_together(folder: str | os.PathLike, *, marker: str | None = None) -> Iterator[Path]:
    """A hidden staging folder inside ``folder`` for one command's set of output files: when the block ends
    they replace their namesakes in ``folder`` (each by an atomic rename, all within moments); when it fails
    the staging folder goes and ``folder`` keeps its previous set whole. ``marker`` names the file that marks
    a complete set (a bundle's json): the old one goes first and the new one comes last, so no moment shows
    a marked mix of two sets.

    Without it an interrupted rerun into an old output folder left new files beside old ones of another
    model (new ``codes.csv``, the old ``summary.json``), a set that looked complete. An error while writing
    names the file in ``folder`` it was meant to become, not the staging copy (which is gone by then).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".caex-partial-", dir=folder))
    try:
        try:
            yield staging
        except OSError as exc:
            if exc.filename is not None and Path(exc.filename).is_relative_to(staging):
                exc.filename = str(folder / Path(exc.filename).relative_to(staging))
            raise
        paths = sorted(staging.rglob("*"), key=lambda path: (path.name == marker, path))
        if marker is not None and (staging / marker).exists():
            (folder / marker).unlink(missing_ok=True)
        for path in paths:
            target = folder / path.relative_to(staging)
            if path.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(path, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


#: The names :func:`atomic_write_bytes` and :func:`replaced_together` give their temporary files and folders
#: (8 random characters: hex in a file's, ``tempfile``'s ``[a-z0-9_]`` in a folder's and in older versions' files).
LEFTOVER_NAME_PATTERN = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp|\.caex-partial-[a-z0-9_]{8}")
#: A temporary file younger than this may still be written by a job that takes no lock (``caex report`` into a
#: run folder, a ``CAE.save`` from the Python API): only older ones are a killed job's leftovers.
LEFTOVER_AGE = 600.0


def remove_leftovers(folder: Path) -> None:
    """Delete the temporary files and staging folders a killed job left directly in ``folder`` (hidden, so no one
    saw them; a checkpoint's is hundreds of MB), by caex's names and at least :data:`LEFTOVER_AGE` old."""
    now = time.time()
    for path in folder.iterdir():
        with suppress(OSError):  # gone meanwhile, or not ours to remove
            if not LEFTOVER_NAME_PATTERN.fullmatch(path.name) or now - path.lstat().st_mtime <= LEFTOVER_AGE:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


@contextmanager
def folder_lock(folder: str | os.PathLike | None, owner: str, *, create: bool = True,
                tidy: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while the block runs, or raise :class:`CaexError` naming the holder.

    ``None`` (nothing written) and a path that is not a folder (a file, or
    missing with ``create=False``) are left unguarded: the caller's own checks
    refuse the latter.

    Two jobs writing one run folder (a second ``--resume`` started by mistake)
    would overwrite each other's checkpoints. The lock is ``flock`` on
    :data:`LOCK_FILE`, which the kernel releases when its process ends, even
    by SIGKILL, so a crash never leaves a stale lock; the file itself is removed
    when the block ends, and so is the folder the lock created (not its parents)
    if nothing was written into it. Once locked, the temporary files a killed job left in
    the folder are removed (:func:`remove_leftovers`), unless ``tidy`` is false: a folder the caller names for
    files of theirs (:meth:`~caex.explain.Explanation.save`) may hold hidden ``.tmp`` files of other programs.
    Where ``flock`` does not exist (Windows) the folder is not guarded, nor on a file system without it
    (:data:`FLOCK_UNSUPPORTED`), which is warned about.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        yield
        return
    if folder is None:
        yield
        return
    folder = Path(folder)
    if not folder.is_dir() and (folder.exists() or not create):
        yield
        return
    path = folder / LOCK_FILE
    unsupported: OSError | None = None  # flock's error on a file system without it: the folder goes unguarded
    while True:
        # this folder and its missing parents, deepest first: a job that writes nothing removes what it made
        created = [missing for missing in (folder, *folder.parents) if not missing.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - closed below, after the lock file goes
        except FileNotFoundError:  # another job's lock just removed the folder it had made for nothing
            continue
        try:
            _lock_soon(handle, fcntl)
        except BlockingIOError:
            in_use = _in_use(folder, handle)
            handle.close()
            raise in_use from None
        except OSError as exc:  # no lock taken (a file system without flock): no lock file left either
            _unlock(handle, path)
            if exc.errno not in FLOCK_UNSUPPORTED:
                _remove_empty(created)
                raise
            unsupported = exc
            break
        if path.exists() and os.path.samestat(os.fstat(handle.fileno()), path.stat()):
            break
        handle.close()  # its holder removed it between our open and flock: lock the file there now
    try:
        if unsupported is not None:  # warned here: a warning turned error still removes the folders made
            warn(f"{folder}: not guarded against a second caex job writing into it at the same time (its file "
                 f"system cannot lock files: {unsupported.strerror or unsupported})")
        else:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{owner} (pid {os.getpid()})")
            handle.flush()
            if tidy:  # locked: no live job writes here (unguarded, a slow one's staging could look old)
                remove_leftovers(folder)
        yield
    finally:
        if unsupported is None:
            _unlock(handle, path)
        _remove_empty(created)


def _lock_soon(handle: IO[str], fcntl: Any) -> None:
    """An exclusive ``flock`` on ``handle``, tried again for a moment: :func:`check_not_in_use` of a command started
    at the same time holds a shared lock on the file for microseconds, which is no job to refuse for."""
    for _ in range(9):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.01)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _in_use(folder: Path, lock: IO[str]) -> CaexError:
    """The refusal of ``folder``, naming the job its open ``lock`` file says holds it."""
    lock.seek(0)
    holder = lock.read().strip() or "another process"
    return CaexError(f"{folder}: in use by {holder}; wait for it to finish or choose another folder")


def check_not_in_use(folder: str | os.PathLike) -> None:
    """Raise what :func:`folder_lock` would if another job holds ``folder``, without taking the lock or creating
    anything: a command checks this before loading its data, which took minutes before the lock refused it."""
    path = Path(folder) / LOCK_FILE
    try:
        import fcntl

        handle = path.open("r", encoding="utf-8")
    except (ImportError, OSError):  # no flock, or no lock file (or none readable): the lock itself decides
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released when the handle closes
        except BlockingIOError:
            raise _in_use(Path(folder), handle) from None
        except OSError:  # a file system without flock: nothing to probe
            return


def _unlock(handle: IO[str], path: Path) -> None:
    """Remove the lock file ``path`` and close its ``handle``, which releases a lock held on it. Removed before:
    while it is locked no one else holds this file, and none is left behind."""
    with suppress(OSError):  # a read-only or vanished folder must not hide the block's own error
        path.unlink()
    handle.close()


def _remove_empty(created: list[Path]) -> None:
    """The folders the lock made (deepest first) that stayed empty: a job that failed before writing anything
    leaves no empty folder either."""
    for made in created:
        try:
            made.rmdir()
        except OSError:  # not empty (or gone): it, and the parents above it, stay
            break
