"""The one stage mechanism (after OGGM's `entity_task`): skip finished work, log it, and
list the files each stage wrote.

A stage is a named function with a fingerprint of everything it depends on. When it
finishes, a marker `<marker_dir>/<name>.json` records the fingerprint, the time it took,
its summary and the files it wrote; a later call with the same fingerprint skips the work
and returns the recorded summary. The main job (`workflow.pipeline`) runs its stages through
it, and the training protocol runs every fold of every round through it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from glacierfacies._io import to_json, write_json

__all__ = ["HASH_BELOW_BYTES", "StageLog", "file_signature", "fingerprint"]

HASH_BELOW_BYTES = 64 * 2**20  # files smaller than this are signed by their content too


def fingerprint(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (configuration, input signatures)."""
    return hashlib.sha256(to_json(obj, indent=None, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_signature(paths: Iterable[str | Path], root: str | Path | None = None, *,
                   always_hash: bool = False) -> list[dict[str, Any]]:
    """Size, modification time and (under HASH_BELOW_BYTES, or always) SHA-256 of every file
    of `paths` (folders walked in sorted order): what a stage's fingerprint signs its input
    files with. Paths under `root` are written relative to it; a missing path is listed as
    missing (the stage then fails with its own error)."""
    root = Path(root).resolve() if root is not None else None
    out: list[dict[str, Any]] = []
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            name = str(f)
            if root is not None:
                try:
                    name = str(f.resolve().relative_to(root))
                except ValueError:
                    pass
            if not f.is_file():
                out.append({"path": name, "missing": True})
                continue
            st = f.stat()
            entry: dict[str, Any] = {"path": name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
            if always_hash or st.st_size < HASH_BELOW_BYTES:
                entry["sha256"] = _sha256(f)
            out.append(entry)
    return out


def _changed_files(old: Any, new: Any) -> list[str]:
    """Paths whose signature differs between two {group: file_signature} records."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    out = []
    for group in sorted(set(old) | set(new)):
        a = {e["path"]: e for e in old.get(group, [])}
        b = {e["path"]: e for e in new.get(group, [])}
        out += [p for p in sorted(set(a) | set(b)) if a.get(p) != b.get(p)]
    return out


def _files_under(paths: Iterable[Path], root: Path) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        p = Path(p)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                try:
                    rel = str(f.relative_to(root))
                except ValueError:
                    rel = str(f)
                out.append({"path": rel, "bytes": f.stat().st_size})
    return out


class StageLog:
    """Markers of finished stages in one folder, with timings and the list of skipped ones."""

    def __init__(self, marker_dir: str | Path, log: Callable[[str], None] | None = print,
                 root: str | Path | None = None):
        self.marker_dir = Path(marker_dir)
        self.root = Path(root) if root is not None else self.marker_dir.parent
        self.log = log or (lambda _msg: None)
        self.timings: dict[str, float] = {}
        self.skipped: list[str] = []

    def marker(self, name: str) -> Path:
        return self.marker_dir / f"{name}.json"

    def record(self, name: str) -> dict[str, Any] | None:
        """The marker's content, or None when the stage never finished (or the marker is bad)."""
        import json

        path = self.marker(name)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            return None

    def done(self, name: str, fp: str) -> bool:
        rec = self.record(name)
        return rec is not None and rec.get("fingerprint") == fp

    def run(self, name: str, fp: str, fn: Callable[[], dict[str, Any] | None], *,
            outputs: Sequence[str | Path] = (), inputs: Any = None) -> dict[str, Any]:
        """Run `fn` unless a marker with fingerprint `fp` exists; return its summary.

        `inputs` (e.g. `file_signature`s by group) is kept in the marker, so a later run
        can say which input files changed.
        """
        rec = self.record(name)
        if rec is not None and rec.get("fingerprint") == fp:
            self.skipped.append(name)
            self.log(f"[{name}] up to date, skipped")
            return rec.get("summary", {})
        changed = _changed_files(rec.get("inputs"), inputs) if rec is not None else []
        if changed:
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            self.log(f"[{name}] input files changed: {', '.join(changed[:3])}{more}")
        self.log(f"[{name}] running ...")
        t0 = time.perf_counter()
        summary = fn() or {}
        seconds = time.perf_counter() - t0
        self.timings[name] = seconds
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.marker(name), {
            "fingerprint": fp, "seconds": seconds,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "summary": summary, "files": _files_under(outputs, self.root),
            **({"inputs": inputs} if inputs is not None else {})})
        self.log(f"[{name}] done in {seconds:.1f} s")
        return summary

    def invalidate(self, names: Iterable[str]) -> None:
        """Forget these stages (their inputs changed), so the next call runs them again."""
        for name in names:
            self.marker(name).unlink(missing_ok=True)
