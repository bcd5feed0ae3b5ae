"""Safe, atomic reading and writing of model and checkpoint files.

Files are written to a temporary file in the target folder and renamed over the target, so a
crash or a full disk never leaves a half-written file in place of a good one. A write never
replaces what is not a regular file: through a symbolic link it goes to the link's target (the
link stays), to a device or a named pipe (``/dev/stdout``, ``/dev/null``, a FIFO) it is written
straight through, and a folder is refused. Files are read with ``torch.load(weights_only=True)``:
tensors, numbers, strings, lists and dicts only, never pickled code.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

__all__ = ["atomic_save", "safe_load", "atomic_write_text", "write_csv", "save_figure",
           "write_target"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def _is_open_stream(path: Path) -> bool:
    """Whether ``path`` names a stream this process already has open (``/dev/stdout``,
    ``/dev/fd/N``, ``/proc/self/fd/N``): written through in append mode, never replaced, so
    ``cmd -o /dev/stdout >> log`` appends to the log instead of replacing it."""
    text = str(path)
    if text.startswith(("/dev/std", "/dev/fd/", "/proc/")):
        return True
    try:
        return path.is_symlink() and os.readlink(path).startswith(("/proc/", "/dev/fd/"))
    except OSError:
        return False


def write_target(path: str | os.PathLike) -> tuple[Path, bool]:
    """Where a write to ``path`` goes: ``(target, through)``.

    ``target`` is ``path``, or the file a symbolic link at ``path`` points to (followed to the
    end, existing or not); ``through`` is true when the target is a character or block device or
    a named pipe, which are written in place rather than replaced. Raises
    :class:`~pyro_lvae.errors.CheckpointError` for a folder, a socket, a link loop or a missing
    parent folder, so a command can check its output path before doing any work.
    """
    path = Path(path)
    if _is_open_stream(path):  # /dev/stdout and friends: the file already open, maybe appended
        return path, True
    try:
        mode = os.stat(path).st_mode  # follows links
    except FileNotFoundError:  # nothing there yet, or a link to nothing yet
        mode = None
    except OSError as e:  # a link loop, a path through a file, ...
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from None
    if mode is not None:
        if stat.S_ISDIR(mode):
            raise CheckpointError(f"cannot write {path}: it is a folder; give a file name "
                                  f"(inside it, for instance)")
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            return path, True
        if not stat.S_ISREG(mode):
            raise CheckpointError(f"cannot write {path}: it is neither a file, a device nor a "
                                  f"pipe (a socket?); give a file name")
    target = path.resolve() if path.is_symlink() else path
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise CheckpointError(f"cannot write {path}: folder {folder} does not exist")
    return target, False


def _atomic_write(path: str | os.PathLike, write) -> Path:
    path = Path(path)
    target, through = write_target(path)
    if through:  # a device or a pipe: no rename; render first, as pipes cannot seek
        buffer = io.BytesIO()
        write(buffer)
        try:
            with open(target, "ab") as f:  # devices and pipes alike; an open stream appends
                f.write(buffer.getvalue())
        except OSError as e:
            raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from e
        return path
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as e:
        raise CheckpointError(
            f"cannot write {path}: {e.strerror or e}; the previous file (if any) is unchanged"
        ) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through a temporary file and an atomic rename (see the module
    docstring for links, devices and pipes)."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a text file atomically (see the module docstring for links, devices and pipes)."""
    return _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_csv(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write dictionaries as CSV rows, atomically. Columns: the keys of the first row whose
    values are not lists or dicts (nested data stays out of tables)."""
    columns = [k for k, v in rows[0].items() if not isinstance(v, (dict, list))] if rows else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(buffer.getvalue(), path)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 80) -> Path:
    """Save a matplotlib figure atomically (the format follows the file name)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    return _atomic_write(path, lambda f: f.write(buffer.getvalue()))


def safe_load(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load(path, weights_only=True)`` with clear errors for missing, corrupt and unsafe
    files."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such file: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the path of a .pt file inside it")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):  # torch.save has written zip files since torch 1.6
            raise CheckpointError(
                f"cannot read {path}: the file is corrupt or truncated (not a torch file)"
            ) from None
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain data, and "
            f"loading it would run pickled code (weights-only loading: {str(e).splitlines()[0]})"
        ) from None
    except PermissionError:
        raise CheckpointError(f"cannot read {path}: permission denied") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as e:
        raise CheckpointError(
            f"cannot read {path}: the file is corrupt or truncated ({type(e).__name__})"
        ) from None
