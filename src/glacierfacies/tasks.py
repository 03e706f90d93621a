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

__all__ = ["StageLog", "fingerprint"]


def fingerprint(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (configuration, input signatures)."""
    return hashlib.sha256(to_json(obj, indent=None, sort_keys=True).encode()).hexdigest()[:16]


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
            outputs: Sequence[str | Path] = ()) -> dict[str, Any]:
        """Run `fn` unless a marker with fingerprint `fp` exists; return its summary."""
        if self.done(name, fp):
            self.skipped.append(name)
            self.log(f"[{name}] up to date, skipped")
            return (self.record(name) or {}).get("summary", {})
        self.log(f"[{name}] running ...")
        t0 = time.perf_counter()
        summary = fn() or {}
        seconds = time.perf_counter() - t0
        self.timings[name] = seconds
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.marker(name), {
            "fingerprint": fp, "seconds": seconds,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "summary": summary, "files": _files_under(outputs, self.root)})
        self.log(f"[{name}] done in {seconds:.1f} s")
        return summary

    def invalidate(self, names: Iterable[str]) -> None:
        """Forget these stages (their inputs changed), so the next call runs them again."""
        for name in names:
            self.marker(name).unlink(missing_ok=True)
