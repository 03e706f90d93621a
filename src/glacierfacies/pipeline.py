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
        for later in STAGES[STAGES.index(name) + 1:]:  # their inputs changed: run them again
            (self.markers / f"{later}.json").unlink(missing_ok=True)
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


# ---------------------------------------------------------------- the stages


def _resolve_inputs(cfg: RunConfig, out: Path) -> Inputs:
    if cfg.uses_sample:
        s = out / "sample"
        from glacierfacies.scene import find_scenes

        return Inputs(scenes=list(find_scenes(s / "scenes")), dem=s / "dem.tif",
                      outlines=s / "outlines.gpkg", labels=s / "labels.gpkg", wgms=s / "wgms",
                      flipped=s / "flipped_labels.csv", truth=s / "truth")
    return Inputs(scenes=expand_scenes(cfg.scenes), dem=Path(cfg.dem), outlines=Path(cfg.outlines),
                  labels=Path(cfg.labels), wgms=Path(cfg.wgms) if cfg.wgms else None)


def _stage_sample(cfg: RunConfig, out: Path) -> dict[str, Any]:
    from glacierfacies.sample import write_sample

    text = write_sample(out / "sample", seed=cfg.seed, overwrite=True)
    return {"summary": text}


def _stage_dataset(cfg: RunConfig, out: Path, inputs: Inputs) -> dict[str, Any]:
    from glacierfacies.patches import build_patchset

    ps = build_patchset(inputs.scenes, inputs.dem, inputs.outlines, inputs.labels,
                        patch_size=cfg.patch_size, features=cfg.features, k_folds=cfg.k_folds,
                        seed=cfg.seed, out_dir=out / "dataset", overwrite=True)
    return {"n_patches": int(len(ps.labels)), "summary": ps.provenance.get("summary", {})}


def train_config(cfg: RunConfig):
    from glacierfacies.training import TrainConfig

    preset = {"sample": TrainConfig.sample, "paper": TrainConfig.paper}.get(cfg.training_preset)
    if preset is None:
        raise InputError(None, f"training_preset must be 'sample' or 'paper', "
                               f"got {cfg.training_preset!r}")
    overrides = dict(cfg.training)
    overrides.setdefault("seed", cfg.seed)
    overrides.setdefault("device", "auto" if cfg.device == "cpu" else cfg.device)
    try:
        return preset(**overrides)
    except (TypeError, ValueError) as exc:
        raise InputError(None, f"training settings: {exc}") from None


def _stage_train(cfg: RunConfig, out: Path, inputs: Inputs) -> dict[str, Any]:
    from glacierfacies.training import train_dataset

    metrics = train_dataset(out / "dataset", out / "train", train_config(cfg),
                            flipped_csv=inputs.flipped if inputs.flipped and
                            inputs.flipped.is_file() else None)
    keep = ("macro_f1_cleaned", "macro_f1_unpruned", "n_pruned", "flip_detection")
    return {k: metrics.get(k) for k in keep if k in metrics}


def model_paths(out: Path) -> list[Path]:
    return sorted((out / "train" / "models").glob("fold*.pt"))


def _stage_maps(cfg: RunConfig, out: Path, inputs: Inputs) -> dict[str, Any]:
    from glacierfacies.mapping import load_members, map_scene, scene_stem

    maps_dir = out / "maps"
    maps_dir.mkdir(parents=True, exist_ok=True)
    members = load_members(model_paths(out))
    done = []
    for scene in inputs.scenes:
        stem = scene_stem(scene)
        facies = maps_dir / f"{stem}_facies.tif"
        conf = maps_dir / f"{stem}_confidence.tif"
        res = map_scene(scene, inputs.dem, inputs.outlines, [], facies, confidence_out=conf,
                        buffer=cfg.buffer, smoothing=cfg.smoothing, device=cfg.device,
                        tile_size=cfg.tile_size, overwrite=True, members=members,
                        progress=False)
        done.append({"scene": str(scene), "map": str(facies), "seconds": round(res.seconds, 2),
                     "classified_px": res.n_classified})
    return {"maps": done}


def _map_files(out: Path) -> list[Path]:
    return sorted((out / "maps").glob("*_facies.tif"))


def _stage_products(cfg: RunConfig, out: Path, inputs: Inputs) -> dict[str, Any]:
    from glacierfacies.massbalance import ProductConfig
    from glacierfacies.products import compute_products, write_products

    pcfg = ProductConfig(refrozen_is_accumulation=cfg.include_refrozen)
    maps = _map_files(out)
    table = compute_products(maps, inputs.outlines, inputs.dem, pcfg)
    (out / "products").mkdir(exist_ok=True)
    write_products(table, out / "products" / "products.gpkg", pcfg)
    write_products(table, out / "products" / "products.csv", pcfg)
    summary: dict[str, Any] = {"rows": int(len(table))}
    if inputs.truth is not None and (inputs.truth / "aar_truth.csv").is_file():
        summary["aar_vs_truth"] = compare_aar_with_truth(table, inputs.truth / "aar_truth.csv",
                                                         cfg.min_observed)
    return summary


def compare_aar_with_truth(table, truth_csv: Path, min_observed: float) -> dict[str, Any]:
    """Products' AAR against the sample's true AAR, where the glacier is well observed."""
    import numpy as np
    import pandas as pd

    truth = pd.read_csv(truth_csv, dtype={"glacier": str, "scene_id": str})
    merged = pd.DataFrame(table).merge(truth, on=["glacier", "scene_id"], suffixes=("", "_true"))
    ok = merged[merged["observed_fraction_true"] >= min_observed]
    err = (ok["aar"] - ok["aar_true"]).abs()
    return {"n": int(len(ok)), "max_abs_error": float(err.max()) if len(ok) else float("nan"),
            "median_abs_error": float(np.median(err)) if len(ok) else float("nan"),
            "within_0.05": int((err <= 0.05).sum())}


def _stage_massbalance(cfg: RunConfig, out: Path, inputs: Inputs) -> dict[str, Any]:
    from glacierfacies import wgms
    from glacierfacies.products import read_products, run_massbalance

    if inputs.wgms is None:
        return {"skipped": "no WGMS folder configured"}
    records = wgms.read_wgms(inputs.wgms)
    products_path = out / "products" / "products.gpkg"
    stats = run_massbalance(read_products(products_path), records, out / "massbalance",
                            products_path, min_years=cfg.min_years,
                            min_observed=cfg.min_observed)
    return {"stats": stats}


# ---------------------------------------------------------------- the report


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _metrics_tables(metrics: dict[str, Any]) -> list[str]:
    import pandas as pd

    from glacierfacies.report import table_html

    tables = []
    rows = []
    for name in ("cleaned", "unpruned"):
        m = metrics.get(name) or {}
        gw = m.get("glacier_wise") or {}
        rows.append({"test folds": name, "n": m.get("n"), "macro F1": m.get("macro_f1"),
                     "accuracy": m.get("accuracy"), "mean IoU": m.get("mean_iou"),
                     "glacier-wise macro F1": f"{_fmt(gw.get('macro_f1_mean'))} ± "
                                              f"{_fmt(gw.get('macro_f1_std'))}",
                     "ECE (100 bins)": m.get("ece")})
    tables.append(table_html(pd.DataFrame(rows)))
    cleaned = metrics.get("cleaned") or {}
    per_class = pd.DataFrame(cleaned.get("per_class") or {}).T
    if len(per_class):
        per_class.index.name = "class (cleaned test folds)"
        tables.append(table_html(per_class))
    for group in ("per_sensor", "per_region"):
        g = cleaned.get(group) or (metrics.get("unpruned") or {}).get(group)
        if g:
            df = pd.DataFrame({k: {"macro F1": v.get("macro_f1"), "n": v.get("n")}
                               for k, v in g.items()}).T
            df.index.name = group.replace("_", " ") + " (cleaned)"
            tables.append(table_html(df))
    return tables


def _quicklooks(out: Path, inputs: Inputs, fig_dir: Path) -> list:
    import rasterio

    from glacierfacies.mapping import scene_stem
    from glacierfacies.report import Figure, quicklook_png
    from glacierfacies.scene import read_scene

    figs = []
    for scene in inputs.scenes:
        stem = scene_stem(scene)
        facies = out / "maps" / f"{stem}_facies.tif"
        if not facies.is_file():
            continue
        with rasterio.open(facies) as ds:
            classes = ds.read(1)
            tags = ds.tags()
            grid_path = facies
        sc = read_scene(scene, grid=grid_path)
        rgb = sc.reflectance[[2, 1, 0]]
        path = quicklook_png(rgb, classes, fig_dir / f"quicklook_{stem}.png",
                             title=f"{sc.scene_id[:60]} ({sc.sensor}, {sc.acquired:%Y-%m-%d})")
        figs.append(Figure(f"{sc.sensor} {sc.acquired:%Y-%m-%d}", path,
                           f"{stem}: true colour and facies map ({tags.get('SCENE_ID', '')})"))
    return figs


def _stage_report(cfg: RunConfig, out: Path, inputs: Inputs, run: Run,
                  products_summary: dict[str, Any]) -> dict[str, Any]:
    import shutil

    import numpy as np
    import pandas as pd

    from glacierfacies.classes import CLASS_NAMES
    from glacierfacies.report import (
        Figure,
        Section,
        bar_counts_png,
        json_block,
        legend_html,
        render_html,
        table_html,
        timeseries_png,
    )

    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    sections: list[Section] = []

    # dataset
    table = pd.read_parquet(out / "dataset" / "table.parquet")
    flagged_path = out / "train" / "cleaning" / "flagged.npy"
    flagged = np.load(flagged_path) if flagged_path.is_file() else np.zeros(len(table), bool)
    per_class = table["class"].value_counts().reindex(CLASS_NAMES, fill_value=0)
    pruned = table.loc[flagged, "class"].value_counts().reindex(CLASS_NAMES, fill_value=0)
    ds = pd.DataFrame({"patches": per_class, "pruned by confident learning": pruned,
                       "pruned %": (100 * pruned / per_class.clip(lower=1)).round(1)})
    ds.index.name = "class"
    by_glacier = table.groupby(["glacier", "fold"]).size().rename("patches").reset_index()
    by_sensor = table["sensor"].value_counts().rename("patches")
    by_sensor.index.name = "sensor"
    f1 = bar_counts_png(per_class, fig_dir / "patches_per_class.png", "labelled patches per class")
    sections.append(Section(
        "Dataset",
        [f"{len(table):,} labelled patches of {table['glacier'].nunique()} glaciers in "
         f"{table['scene_id'].nunique()} scenes; {int(flagged.sum()):,} labels "
         f"({100 * flagged.mean():.1f}%) pruned by confident learning (facies classes only)."],
        [table_html(ds), table_html(by_sensor.to_frame()), table_html(by_glacier)],
        [Figure("Patches per class", f1)],
    ))

    # accuracy and calibration
    metrics_path = out / "train" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    clean = metrics.get("cleaning") or {}
    paras = [f"Out-of-fold scores of the second-round models ({cfg.k_folds} folds by glacier; "
             "validation fold = test fold − 1). Macro F1 on cleaned test folds "
             f"<b>{_fmt(metrics.get('macro_f1_cleaned'))}</b>, on unpruned test folds "
             f"<b>{_fmt(metrics.get('macro_f1_unpruned'))}</b>."]
    if "flipped_facies_flagged_recall" in clean:
        paras.append(f"Confident learning found {100 * clean['flipped_facies_flagged_recall']:.0f}"
                     f"% of the sample's deliberately flipped facies labels with precision "
                     f"{100 * clean['flag_precision']:.0f}%.")
    figs = []
    train_dir = out / "train"
    for name, title in (("confusion_cleaned.png", "Confusion matrix, cleaned test folds"),
                        ("confusion_unpruned.png", "Confusion matrix, unpruned test folds")):
        if (train_dir / name).is_file():
            figs.append(Figure(title, shutil.copy(train_dir / name, fig_dir / name)))
    sections.append(Section("Accuracy", paras, _metrics_tables(metrics), figs))
    cal = metrics.get("calibration") or {}
    cal_figs = []
    if (train_dir / "reliability.png").is_file():
        cal_figs.append(Figure("Reliability before and after temperature scaling",
                               shutil.copy(train_dir / "reliability.png",
                                           fig_dir / "reliability.png")))
    sections.append(Section(
        "Calibrated confidence",
        [f"{cal.get('method', 'temperature scaling')}: ECE (100 bins) "
         f"{_fmt(cal.get('ece_before'))} before, {_fmt(cal.get('ece_after'))} after; "
         f"temperatures {', '.join(_fmt(t, 2) for t in cal.get('temperatures', []))}."],
        [], cal_figs))

    # maps
    sections.append(Section("Facies maps",
                            ["Every scene mapped with the mean probabilities of the fold models "
                             "inside the glacier outlines, 3×3 mode smoothing; Cloud-Optimised "
                             f"GeoTIFFs in <code>{html_path(out / 'maps')}</code>.", legend_html()],
                            [], _quicklooks(out, inputs, fig_dir)))

    # products
    products_csv = out / "products" / "products.csv"
    if products_csv.is_file():
        prod = pd.read_csv(products_csv, dtype={"glacier": str})
        ts = timeseries_png(prod, fig_dir / "aar_snowline_timeseries.png", cfg.min_observed)
        paras = ["AAR = (snow + firn) / observed glacier area; shadowed glacier pixels take the "
                 "side of the snowline they lie on; cloud and nodata are unobserved."]
        truth = products_summary.get("aar_vs_truth")
        if truth:
            paras.append(f"Against the sample's true AAR where ≥ {cfg.min_observed:.0%} of the "
                         f"glacier is observed: {truth['within_0.05']} of {truth['n']} "
                         f"glacier-scenes within 0.05, median error "
                         f"{_fmt(truth['median_abs_error'])}, max {_fmt(truth['max_abs_error'])}.")
        cols = [c for c in ("glacier", "date", "sensor", "observed_fraction", "aar", "snowline_m",
                            "snowline_unc_m", "mean_confidence") if c in prod.columns]
        sections.append(Section("Glacier products", paras,
                                [table_html(prod[cols].sort_values(["glacier", "date"]))],
                                [Figure("AAR and snowline altitude", ts)]))

    # mass balance
    stats_path = out / "massbalance" / "stats.json"
    if stats_path.is_file():
        stats = json.loads(stats_path.read_text())
        rows = []
        for product, r in stats.get("regressions", {}).items():
            for key, label in (("global_leave_one_glacier_out", "global, leave-one-glacier-out"),
                               ("per_glacier_leave_one_year_out",
                                "per glacier, leave-one-year-out")):
                s = r.get(key) or {}
                rows.append({"product": product, "model": label, "n": s.get("n"),
                             "r": s.get("r"), "RMSE (m w.e.)": s.get("rmse_mwe"),
                             "slope": s.get("slope"), "intercept": s.get("intercept"),
                             "p-value": s.get("p_value")})
        mfigs = [Figure(p.stem.replace("_", " "), shutil.copy(p, fig_dir / p.name))
                 for p in sorted((out / "massbalance").glob("scatter_*.png"))]
        sections.append(Section(
            "Mass balance",
            [f"{stats.get('n_glacier_years')} glacier-years of {stats.get('n_glaciers')} "
             "glaciers: the end-of-season scene of each glacier and hydrological year against "
             "the WGMS annual balance. Scores are cross-validated (held-out predictions)."],
            [table_html(pd.DataFrame(rows))], mfigs))

    # configuration
    sections.append(Section("Configuration and versions", [
        "Rerun with <code>glacierfacies run -o " + html_path(out) + "</code>: finished stages "
        "are skipped."], [json_block(dataclasses.asdict(cfg)), json_block(versions()),
                          json_block({"stage_seconds": run.timings})]))
    html_text = render_html(
        "glacierfacies run report",
        f"Surface facies of {table['glacier'].nunique()} glaciers from "
        f"{len(inputs.scenes)} scenes{' (built-in sample)' if cfg.uses_sample else ''}; "
        f"generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.", sections)
    dest = out / "report.html"
    tmp = dest.with_suffix(".html.tmp")
    tmp.write_text(html_text, encoding="utf-8")
    tmp.replace(dest)
    return {"report": str(dest), "figures": len(list(fig_dir.glob("*.png")))}


def html_path(p: Path) -> str:
    import html

    return html.escape(str(p))


def run_pipeline(config: str | Path | None, out: str | Path,
                 log: Callable[[str], None] = print) -> Path:
    """Run (or resume) the whole chain into OUT and return the report's path."""
    cfg, _ = load_config(config)
    out = Path(out).resolve()
    if not out.parent.is_dir():
        raise InputError(out.parent, "output folder's parent does not exist")
    out.mkdir(exist_ok=True)
    (out / "run_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    run = Run(out, cfg, log)
    t0 = time.perf_counter()
    if cfg.uses_sample:
        run.stage("sample", lambda: _stage_sample(cfg, out))
    inputs = _resolve_inputs(cfg, out)
    run.stage("dataset", lambda: _stage_dataset(cfg, out, inputs))
    run.stage("train", lambda: _stage_train(cfg, out, inputs))
    run.stage("maps", lambda: _stage_maps(cfg, out, inputs))
    products_summary = run.stage("products", lambda: _stage_products(cfg, out, inputs))
    run.stage("massbalance", lambda: _stage_massbalance(cfg, out, inputs))
    if run.timings or not (out / "report.html").is_file():  # something changed: re-report
        (run.markers / "report.json").unlink(missing_ok=True)
    run.stage("report", lambda: _stage_report(cfg, out, inputs, run, products_summary))
    log(f"finished in {time.perf_counter() - t0:.1f} s")
    return out / "report.html"
