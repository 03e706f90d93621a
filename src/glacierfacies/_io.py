"""Private output helpers shared by every writer (after cleanlab's `internal/`).

One atomic write (temporary sibling, then rename), one JSON encoder and writer, one figure
saver: so no module hand-rolls temp-and-rename or its own JSON fallbacks.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from glacierfacies.errors import InputError

__all__ = ["atomic_output", "check_output", "check_output_folder", "json_default",
           "save_figure", "sweep_temporaries", "temp_prefix", "to_json", "write_json",
           "write_text"]


def check_output_folder(folder: str | os.PathLike) -> Path:
    """InputError unless `folder` is an existing, writable folder (missing, a file in the
    way, or no write permission)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "output folder does not exist" if not folder.exists()
                         else "is not a folder (cannot write inside a file)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(folder, "output folder is not writable (permission denied)")
    return folder


def check_output(dest: str | os.PathLike, *, overwrite: bool) -> Path:
    """InputError unless `dest` may be written: its folder exists, and it does not or may be
    replaced. Writers call it before any work, so a refused command writes nothing."""
    dest = Path(dest)
    check_output_folder(dest.parent)
    if dest.exists() and not overwrite:
        raise InputError(dest, "output exists; pass --overwrite to replace it")
    return dest


def temp_prefix(dest: Path) -> str:
    """The prefix of `dest`'s temporaries: `.NAME.PID-` (then random letters, `.tmp`), so a
    later writer can tell one of a live process from one a killed process left behind."""
    return f".{dest.name}.{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


#: A temporary without a process id (older versions) is swept when older than this (s).
STALE_UNTAGGED_S = 3600.0


def sweep_temporaries(dest: str | os.PathLike) -> list[Path]:
    """Remove the `.NAME.*.tmp` files and folders beside `dest` whose writing process is
    gone (killed mid-write); those of live processes stay. Returns what was removed."""
    import re
    import time

    dest = Path(dest)
    try:
        names = os.listdir(dest.parent)
    except OSError:
        return []
    head = f".{dest.name}."
    removed = []
    for name in names:
        if not (name.startswith(head) and name.endswith(".tmp")):
            continue
        path = dest.parent / name
        m = re.match(r"(\d+)-", name[len(head):])
        try:
            if m:
                if _alive(int(m.group(1))):
                    continue
            elif time.time() - path.lstat().st_mtime < STALE_UNTAGGED_S:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` only if the block succeeds.

    Works for files and folders (the block creates whichever it wants at the yielded path).
    """
    dest = check_output(dest, overwrite=overwrite)
    sweep_temporaries(dest)  # what a killed writer of `dest` left
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent)
    os.close(fd)
    os.unlink(tmp_name)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif tmp.is_dir() and (dest.is_symlink() or dest.exists()):
            dest.unlink()  # a folder replaces a file or link: rename cannot do that alone
        os.replace(tmp, dest)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def json_default(obj: Any) -> Any:
    """numpy scalars and arrays as Python values, anything else (paths, dates, CRS) as text."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _nan_to_null(obj: Any) -> Any:
    if hasattr(obj, "tolist") and getattr(obj, "ndim", 0) > 0:  # numpy array: its values
        obj = obj.tolist()
    if isinstance(obj, dict):
        return {k: _nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_null(v) for v in obj]
    if hasattr(obj, "dtype") and getattr(obj, "ndim", 1) == 0:  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def to_json(obj: Any, *, indent: int | None = 2, strict: bool = False,
            sort_keys: bool = False) -> str:
    """JSON text; `strict` writes NaN and infinities as null (strict JSON for other tools)."""
    if strict:
        return json.dumps(_nan_to_null(obj), indent=indent, default=json_default,
                          allow_nan=False, sort_keys=sort_keys)
    return json.dumps(obj, indent=indent, default=json_default, sort_keys=sort_keys)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2,
               strict: bool = False, overwrite: bool = True) -> Path:
    """Write `obj` as JSON to `path` atomically (see `to_json`)."""
    text = to_json(obj, indent=indent, strict=strict)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    """Write text (UTF-8) to `path` atomically."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path
