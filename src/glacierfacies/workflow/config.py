"""The main job's configuration: read from YAML/TOML, resolved to input paths."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glacierfacies import __version__
from glacierfacies.errors import InputError


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
    training_preset: str | None = None  # "sample" (fast, CPU) or "paper"; None: sample for
    #                                     the built-in sample, paper for user scenes
    buffer: str = "0m"
    tile_size: int = 1024
    device: str = "auto"  # training and maps: auto (cuda when present), cpu, cuda, cuda:N
    smoothing: bool = True
    min_observed: float = 0.8
    include_refrozen: bool = False
    accumulation: str = "snow"  # "snow" (end-of-season snow cover) or "snow+firn"
    min_years: int = 8
    # how scenes are read (as the commands' --band-map, --scale, ...; see ReadOptions)
    band_map: str | dict[str, int] | None = None
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    product_mask: bool = True
    mask_saturated: bool = False
    s2_offset: float | None = None
    resolution: float = 10.0  # target grid, m (10, 20 or 30); recorded in the model cards
    fill_gaps: int = 0  # inpaint optical gaps of up to N px (0: off)

    @property
    def read_options(self):
        """How this run reads scenes, as the `ReadOptions` the commands use."""
        from glacierfacies.scenes.options import ReadOptions

        return ReadOptions.from_cli(self.band_map, self.scale, self.offset, self.nodata,
                                    not self.product_mask, self.mask_saturated, self.s2_offset,
                                    self.resolution, self.fill_gaps)

    def __post_init__(self) -> None:
        if self.training_preset is None:
            object.__setattr__(self, "training_preset", "paper" if self.scenes else "sample")

    @property
    def map_config(self):
        """The mapping options of this run as the `MapConfig` that `map` uses."""
        from glacierfacies.mapping.config import MapConfig

        device = self.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return MapConfig(buffer=self.buffer, smoothing=self.smoothing, device=device,
                         tile_size=self.tile_size, read=self.read_options)

    @property
    def uses_sample(self) -> bool:
        return not self.scenes

    def fingerprint(self, keys: tuple[str, ...]) -> str:
        d = dataclasses.asdict(self)
        blob = json.dumps({k: d[k] for k in keys}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_READ_KEYS = ("band_map", "scale", "offset", "nodata", "product_mask", "mask_saturated",
              "s2_offset", "resolution", "fill_gaps")


_STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "sample": ("scenes", "seed"),
    "dataset": ("scenes", "dem", "outlines", "labels", "patch_size", "features", "k_folds",
                *_READ_KEYS),
    "train": ("training", "training_preset", "seed"),
    "maps": ("buffer", "tile_size", "smoothing", *_READ_KEYS),
    "products": ("min_observed", "include_refrozen", "accumulation"),
    "massbalance": ("wgms", "min_years", "min_observed"),
    "real": (),  # the maps' settings (above) and the built-in models
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
    from glacierfacies.workflow.schema import check_config

    check_config(raw, path)
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
    try:
        cfg.read_options  # noqa: B018 (a bad band map or scale fails here, naming the file)
    except InputError as exc:
        raise InputError(path, exc.problem) from None
    if cfg.scenes:
        missing = [k for k in ("dem", "outlines", "labels") if not getattr(cfg, k)]
        if missing:
            raise InputError(path, f"with `scenes` set, also set {', '.join(missing)}")
    return cfg, base


@dataclass
class Inputs:
    scenes: list[Path]
    dem: Path
    outlines: Path
    labels: Path
    wgms: Path | None
    flipped: Path | None = None
    truth: Path | None = None


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


def _resolve_inputs(cfg: RunConfig, out: Path) -> Inputs:
    if cfg.uses_sample:
        s = out / "sample"
        from glacierfacies.scenes.reader import find_scenes

        return Inputs(scenes=list(find_scenes(s / "scenes")), dem=s / "dem.tif",
                      outlines=s / "outlines.gpkg", labels=s / "labels.gpkg", wgms=s / "wgms",
                      flipped=s / "flipped_labels.csv", truth=s / "truth")
    from glacierfacies.scenes.reader import expand_scenes

    return Inputs(scenes=expand_scenes(cfg.scenes), dem=Path(cfg.dem), outlines=Path(cfg.outlines),
                  labels=Path(cfg.labels), wgms=Path(cfg.wgms) if cfg.wgms else None)


def train_config(cfg: RunConfig):
    from glacierfacies.training.config import TrainConfig

    preset = {"sample": TrainConfig.sample, "paper": TrainConfig.paper}.get(cfg.training_preset)
    if preset is None:
        raise InputError(None, f"training_preset must be 'sample' or 'paper', "
                               f"got {cfg.training_preset!r}")
    overrides = dict(cfg.training)
    overrides.setdefault("seed", cfg.seed)
    overrides.setdefault("device", cfg.device)
    try:
        return preset(**overrides)
    except (TypeError, ValueError) as exc:
        raise InputError(None, f"training settings: {exc}") from None

