"""Safe, atomic reading and writing of model and checkpoint files.

Files are written to a temporary file in the target folder and renamed over the target, so a
crash or a full disk never leaves a half-written file in place of a good one. A write never
replaces what is not a regular file: through a symbolic link it goes to the link's target (the
link stays), to a device or a named pipe (``/dev/stdout``, ``/dev/null``, a FIFO) it is written
straight through, and a folder is refused. Files are read with ``torch.load(weights_only=True)``:
tensors, numbers, strings, lists and dicts only, never pickled code. A file that holds other
Python objects (classes, functions: what a pickle needs to run code) is refused as unsafe, with
the names of the objects; one that is no torch file at all is named corrupt or truncated.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import pickletools
import re
import stat
import tempfile
import warnings
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


#: how torch's weights-only unpickler names an object it refuses
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+) was not an allowed global")
#: the most of a file that is read to find the objects a plain pickle names
_SCAN_BYTES = 64 * 2**20


def _pickled_objects(path: Path) -> list[str] | None:
    """The classes and functions (``module.name``) that the pickle stream in ``path`` names, read
    with :func:`pickletools.genops` (which runs nothing); ``None`` if the file is no pickle."""
    with open(path, "rb") as f:
        data = f.read(_SCAN_BYTES)
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL":
                names.append(".".join(strings[-2:]) if len(strings) >= 2 else "an object")
            elif op.name in ("EXT1", "EXT2", "EXT4"):
                names.append(f"extension {arg}")
            elif isinstance(arg, str):
                strings.append(arg)
            if op.name == "STOP":
                break
    except Exception:  # noqa: BLE001 - any parse failure: not a (complete) pickle
        return names or None
    return names


def _torch_reason(error: Exception) -> str:
    """The line of a weights-only unpickling error that says what was refused."""
    lines = [line.strip() for line in str(error).splitlines()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else "")
    return lines[0] if lines else type(error).__name__


def safe_load(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load(path, weights_only=True)`` with clear errors for missing, corrupt and unsafe
    files: a :class:`~pyro_lvae.errors.CheckpointError` that names the file and says whether it
    is missing, a folder, unreadable, corrupt or truncated, or unsafe (it holds Python objects
    that weights-only loading refuses, named in the message)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such file: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the path of a .pt file inside it")
    try:
        with warnings.catch_warnings():  # a plain pickle is refused below, with its reason
            warnings.filterwarnings("ignore", message="Detected pickle protocol",
                                    category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        names = list(dict.fromkeys(_REFUSED_GLOBAL.findall(str(e))))
        zipped = zipfile.is_zipfile(path)  # torch.save has written zip files since torch 1.6
        if not names and not zipped:  # a plain pickle (torch cannot read one) or no pickle
            names = _pickled_objects(path)
            if names is None:
                raise CheckpointError(
                    f"cannot read {path}: the file is corrupt or truncated (not a torch file)"
                ) from None
            if not names:
                raise CheckpointError(
                    f"cannot read {path}: it is a plain Python pickle, not a file written by "
                    f"torch.save (pyro-lvae reads only those)"
                ) from None
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3
                                            else "")
            raise CheckpointError(
                f"refusing to load {path}: it holds Python objects ({shown}) that weights-only "
                f"loading refuses, since unpickling them could run pickled code; pyro-lvae "
                f"files hold tensors and plain data only, so this one was written by something "
                f"else or altered"
            ) from None
        raise CheckpointError(
            f"refusing to load {path}: it holds pickled data that weights-only loading "
            f"refuses ({_torch_reason(e)}), possibly code; pyro-lvae files hold tensors and "
            f"plain data only"
        ) from None
    except PermissionError:
        raise CheckpointError(f"cannot read {path}: permission denied") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as e:
        raise CheckpointError(
            f"cannot read {path}: the file is corrupt or truncated ({type(e).__name__})"
        ) from None
