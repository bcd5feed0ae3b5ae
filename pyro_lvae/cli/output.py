"""What the commands write: result files, folders, and ``-`` for standard output."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from ..errors import CheckpointError, ConfigError
from ..io import atomic_write_text, write_target

#: the output name that means standard output
STDOUT = "-"


def finite_or_none(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every number that is not finite (a bits/dim that does not apply) as
    ``None``, for strict JSON."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in values.items()}


def write_json(data: dict[str, Any], path: Path) -> None:
    """Strict JSON: a value that is not a finite number (bits/dim of scaled pixels) is null."""
    atomic_write_text(json.dumps(finite_or_none(data), indent=2, allow_nan=False) + "\n", path)


def make_dir(path: Path, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) unless it exists; a one-line error if that fails."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create {what} {path}: {e.strerror}") from None
    return path


def check_folder_name(dest: str, flag: str) -> None:
    """Refuse ``-`` as a folder to write: it means standard output elsewhere, and a folder
    named ``-`` is rarely meant (``./-`` names one)."""
    if dest == STDOUT:
        raise ConfigError(f"{flag} - would write a folder named '-': this command writes a "
                          f"folder, not standard output; give a folder name (./- if you mean "
                          f"that name)")


def check_log_folder(dest: str | None, flag: str) -> None:
    """Refuse a folder to create or write into whose path meets a file (``None``: no
    folder)."""
    if dest is None:
        return
    path = Path(dest)
    for part in (path, *path.parents):
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                what = "is a file" if part == path else f"lies in {part}, a file"
                raise ConfigError(f"{flag} {dest} {what}; give a folder")
            return


def check_output(dest: str, suffixes: tuple[str, ...], kind: str, flag: str) -> None:
    """Refuse, before any work, an output the command cannot write: a file name whose suffix is
    not one of ``suffixes`` (the formats a command writes: ``kind``; no suffix is fine), a
    folder, or a file in a missing folder. ``-`` (standard output) is always fine."""
    if dest == STDOUT:
        return
    suffix = Path(dest).suffix.lower()
    if suffix and suffix not in suffixes:
        raise ConfigError(f"cannot write {dest}: this command writes {kind} only; give {flag} a "
                          f"file name ending in {' or '.join(suffixes)}, or - for standard "
                          f"output")
    write_target(dest)


def write_output(text: str, dest: str) -> None:
    """Write ``text`` to the file ``dest`` (atomically, or straight into a device or a pipe), or
    to standard output if ``dest`` is ``-``."""
    if dest != STDOUT:
        atomic_write_text(text, Path(dest))
        return
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped early (``| head``): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit's flush finds no pipe


def info_stream(dest: str | None) -> TextIO:
    """Where a command's messages go: standard error when its data go to standard output."""
    return sys.stderr if dest == STDOUT else sys.stdout


def names(text: str | None) -> list[str]:
    """Comma-separated names, blanks dropped."""
    return [c.strip() for c in text.split(",") if c.strip()] if text else []


def int_list(text: str, flag: str) -> list[int]:
    """Comma-separated integers >= 1 given to ``flag``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} takes integers >= 1, got {text!r}")
    return values
