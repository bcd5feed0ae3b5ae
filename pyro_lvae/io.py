"""Safe, atomic reading and writing of model and checkpoint files.

Files are written to a temporary file in the target folder and renamed over the target, so a
crash or a full disk never leaves a half-written file in place of a good one. Files are read
with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only, never
pickled code.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

__all__ = ["atomic_save", "safe_load", "atomic_write_text", "write_csv", "save_figure"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: str | os.PathLike, write) -> Path:
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CheckpointError(f"cannot write {path}: folder {folder} does not exist")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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
    """``torch.save(obj, path)`` through a temporary file and an atomic rename."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a text file atomically."""
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
