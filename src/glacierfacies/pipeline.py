"""The main job: sample or user data -> PatchSet -> k-fold training with confident learning ->
facies maps of every scene -> glacier products -> mass-balance regression -> HTML report.

Every stage writes into its own folder under OUT and a marker `OUT/stages/<stage>.json`
holding a fingerprint of the configuration it ran with (and of the stages before it). A
rerun skips every stage whose marker matches, so a finished run is re-reported in seconds
and an interrupted one resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import platform
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from glacierfacies import __version__
from glacierfacies.errors import InputError

STAGES = ("sample", "dataset", "train", "maps", "products", "massbalance", "report")


@dataclass(frozen=True)
class RunConfig:
    """What `glacierfacies run` does; read from YAML/TOML, saved as OUT/run_config.json.

    With no data paths the built-in sample (seed `seed`) is written to OUT/sample and used.
    Paths in a config file are relative to that file.
    """

    scenes: tuple[str, ...] = ()  # scene folders/files or glob patterns
    dem: str | None = None
    outlines: str | None = None
    labels: str | None = None
    wgms: str | None = None  # WGMS FoG folder (overview CSV + mbdata/)
    seed: int = 0
    patch_size: int = 33
    features: str = "all"
    k_folds: int = 6
    training: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    training_preset: str = "sample"  # "sample" (fast, CPU) or "paper"
    buffer: str = "0m"
    tile_size: int = 1024
    device: str = "cpu"
    smoothing: bool = True
    min_observed: float = 0.8
    include_refrozen: bool = False
    min_years: int = 8

    @property
    def uses_sample(self) -> bool:
        return not self.scenes

    def fingerprint(self, keys: tuple[str, ...]) -> str:
        d = dataclasses.asdict(self)
        blob = json.dumps({k: d[k] for k in keys}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "sample": ("scenes", "seed"),
    "dataset": ("scenes", "dem", "outlines", "labels", "patch_size", "features", "k_folds"),
    "train": ("training", "training_preset", "seed"),
    "maps": ("buffer", "tile_size", "smoothing"),
    "products": ("min_observed", "include_refrozen"),
    "massbalance": ("wgms", "min_years", "min_observed"),
    "report": (),
}


def load_config(path: str | Path | None) -> tuple[RunConfig, Path]:
    """Read a YAML or TOML run configuration (unknown keys are an error, paths made absolute)."""
    if path is None:
        return RunConfig(), Path.cwd()
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "configuration file not found")
    try:
        if path.suffix.lower() == ".toml":
            raw = tomllib.loads(path.read_text())
        else:
            import yaml

            raw = yaml.safe_load(path.read_text()) or {}
    except Exception as exc:  # parse errors of either format
        raise InputError(path, f"cannot parse configuration: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise InputError(path, "configuration must be a mapping of keys to values")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(path, f"unknown configuration key(s) {unknown}; known: {sorted(known)}")
    base = path.parent.resolve()

    def absolute(p: str) -> str:
        return str(p) if Path(p).is_absolute() else str(base / p)

    if "scenes" in raw:
        scenes = raw["scenes"]
        raw["scenes"] = tuple(absolute(s) for s in ([scenes] if isinstance(scenes, str) else scenes))
    for key in ("dem", "outlines", "labels", "wgms"):
        if raw.get(key):
            raw[key] = absolute(raw[key])
    cfg = RunConfig(**raw)
    if cfg.scenes:
        missing = [k for k in ("dem", "outlines", "labels") if not getattr(cfg, k)]
        if missing:
            raise InputError(path, f"with `scenes` set, also set {', '.join(missing)}")
    return cfg, base


def expand_scenes(patterns: tuple[str, ...]) -> list[Path]:
    """Scene paths from explicit paths and glob patterns, sorted, duplicates removed."""
    out: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(pat)) if any(ch in pat for ch in "*?[") else [pat]
        if not hits:
            raise InputError(pat, "no scene matches this pattern")
        for h in hits:
            p = Path(h)
            if not p.exists():
                raise InputError(p, "scene not found")
            if p not in out:
                out.append(p)
    return out


@dataclass
class Inputs:
    scenes: list[Path]
    dem: Path
    outlines: Path
    labels: Path
    wgms: Path | None
    flipped: Path | None = None
    truth: Path | None = None


class Run:
    """One run folder: stage markers, timings and a log of what each stage wrote."""

    def __init__(self, out: Path, cfg: RunConfig, log: Callable[[str], None] = print):
        self.out = out
        self.cfg = cfg
        self.log = log
        self.markers = out / "stages"
        self.timings: dict[str, float] = {}
        self.skipped: list[str] = []

    def _fingerprint(self, stage: str) -> str:
        upto = STAGES[: STAGES.index(stage) + 1]
        keys = tuple(k for s in upto for k in _STAGE_KEYS[s])
        return self.cfg.fingerprint(keys)

    def done(self, stage: str) -> bool:
        marker = self.markers / f"{stage}.json"
        if not marker.is_file():
            return False
        try:
            return json.loads(marker.read_text()).get("fingerprint") == self._fingerprint(stage)
        except json.JSONDecodeError:
            return False

    def stage(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        marker = self.markers / f"{name}.json"
        if self.done(name):
            self.skipped.append(name)
            self.log(f"[{name}] up to date, skipped")
            return json.loads(marker.read_text()).get("summary", {})
        self.log(f"[{name}] running ...")
        t0 = time.perf_counter()
        summary = fn() or {}
        self.timings[name] = time.perf_counter() - t0
        self.markers.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fingerprint": self._fingerprint(name),
                                   "seconds": self.timings[name],
                                   "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                                   "summary": summary}, indent=2, default=str))
        tmp.replace(marker)
        self.log(f"[{name}] done in {self.timings[name]:.1f} s")
        return summary


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide the results."""
    import importlib.metadata as md

    out = {"glacierfacies": __version__, "python": platform.python_version(),
           "platform": platform.platform()}
    for pkg in ("numpy", "torch", "rasterio", "geopandas", "cleanlab", "scikit-learn", "scipy",
                "pandas", "dask"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
