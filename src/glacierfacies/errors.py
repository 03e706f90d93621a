"""One exception type for bad input, and atomic output writing.

Every user-facing failure raises `InputError` with a one-line message that names the file
and the problem; the CLI prints it as `error: ...` and exits non-zero. Outputs are written
to a temporary sibling and renamed, so a failure never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class InputError(Exception):
    """Bad user input: a one-line, file-naming message."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self):  # picklable, so errors travel back from Dask workers
        return (type(self), (self.path, self.problem))


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` only if the block succeeds.

    Works for files and folders (the block creates whichever it wants at the yielded path).
    """
    dest = Path(dest)
    if not dest.parent.exists():
        raise InputError(dest.parent, "output folder does not exist")
    if dest.exists() and not overwrite:
        raise InputError(dest, "output exists; pass --overwrite to replace it")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    os.unlink(tmp_name)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
