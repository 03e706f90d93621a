"""The files of a product, wherever they lie: a folder, a `.zip` (`.SAFE.zip`) or a `.tar`.

Archives are read in place: names and metadata through Python's zipfile / tarfile, rasters
through GDAL's /vsizip/ and /vsitar/, so a downloaded product needs no unpacking.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from glacierfacies.errors import InputError
from glacierfacies.scenes.grid import _first_line

__all__ = ["ProductFiles", "is_archive", "open_product"]

_ZIP_SUFFIXES = (".zip",)
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_archive(path: str | os.PathLike) -> bool:
    name = Path(path).name.lower()
    return Path(path).is_file() and name.endswith(_ZIP_SUFFIXES + _TAR_SUFFIXES)


class ProductFiles:
    """Relative POSIX names of a product's files, their text, and paths GDAL can open."""

    def __init__(self, path: Path, names: dict[str, str], kind: str):
        self.path = path  # what the user gave (folder or archive)
        self.kind = kind  # "dir", "zip" or "tar"
        self._names = names  # normalised relative name -> name inside the container

    @property
    def names(self) -> list[str]:
        return sorted(self._names)

    @property
    def product_name(self) -> str:
        """The product's name: the folder's, the single top folder of an archive, or the
        archive's name without .zip/.tar."""
        if self.kind == "dir":
            return self.path.name
        tops = {PurePosixPath(n).parts[0] for n in self._names if len(PurePosixPath(n).parts) > 1}
        if len(tops) == 1 and all(len(PurePosixPath(n).parts) > 1 for n in self._names):
            return tops.pop()
        name = self.path.name
        for suffix in _TAR_SUFFIXES + _ZIP_SUFFIXES:
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name

    def display(self, name: str) -> Path:
        """`name` as a path for messages: the folder or archive, then the name inside."""
        return self.path / name

    def raster(self, name: str) -> str:
        """A path rasterio opens: the file itself, or GDAL's /vsizip/ or /vsitar/ path."""
        if self.kind == "dir":
            return str(self.path / name)
        return f"/vsi{self.kind}/{self.path.resolve()}/{self._names[name]}"

    def read_bytes(self, name: str) -> bytes:
        try:
            if self.kind == "dir":
                return (self.path / name).read_bytes()
            if self.kind == "zip":
                with zipfile.ZipFile(self.path) as zf:
                    return zf.read(self._names[name])
            with tarfile.open(self.path) as tf:
                member = tf.extractfile(self._names[name])
                if member is None:
                    raise OSError("not a regular file")
                return member.read()
        except (OSError, KeyError, zipfile.BadZipFile, tarfile.TarError) as exc:
            raise InputError(self.display(name), f"cannot read ({_first_line(exc)})") from None

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8", errors="replace")


def _dir_names(folder: Path, recursive: bool) -> dict[str, str]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    out = {}
    for q in it:
        if q.is_file():
            rel = q.relative_to(folder).as_posix()
            out[rel] = rel
    return out


def open_product(path: str | os.PathLike, recursive: bool = True) -> ProductFiles:
    """The files of a product folder or archive; a corrupt archive is a one-line InputError."""
    p = Path(path)
    if p.is_dir():
        return ProductFiles(p, _dir_names(p, recursive), "dir")
    name = p.name.lower()
    try:
        if name.endswith(_ZIP_SUFFIXES):
            with zipfile.ZipFile(p) as zf:
                names = {n.rstrip("/"): n for n in zf.namelist() if not n.endswith("/")}
            return ProductFiles(p, _normalise(names), "zip")
        if name.endswith(_TAR_SUFFIXES):
            with tarfile.open(p) as tf:
                names = {m.name: m.name for m in tf.getmembers() if m.isfile()}
            return ProductFiles(p, _normalise(names), "tar")
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise InputError(p, f"cannot read archive ({_first_line(exc)})") from None
    raise InputError(p, "not a product folder or archive (.zip, .tar)")


def _normalise(names: dict[str, str]) -> dict[str, str]:
    out = {}
    for rel, inner in names.items():
        parts = [q for q in PurePosixPath(rel).parts if q not in (".", "/")]
        if parts:
            out["/".join(parts)] = inner
    return out
