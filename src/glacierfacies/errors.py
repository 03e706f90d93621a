"""The exception hierarchy (after rasterio's `errors.py`).

Every user-facing failure is a `GlacierFaciesError`; the CLI catches the root and prints
one line, `error: <path>: <problem>`, and exits non-zero. `InputError` is also a
`ValueError`, so library callers that catch `ValueError` keep working.
"""

from __future__ import annotations

import os

__all__ = ["GlacierFaciesError", "InputError", "ModelMismatchError", "RunStateError"]


class GlacierFaciesError(Exception):
    """Root of every error glacierfacies raises on purpose: a one-line, file-naming message."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self):  # picklable, so errors travel back from Dask workers
        return (type(self), (self.path, self.problem))


class InputError(GlacierFaciesError, ValueError):
    """Bad user input: missing or corrupt file, wrong CRS, missing band, unknown class."""


class ModelMismatchError(InputError):
    """A model and the data it is applied to disagree (features, classes, patch size)."""


class RunStateError(GlacierFaciesError):
    """A run folder holds results that this run cannot continue (another configuration)."""
