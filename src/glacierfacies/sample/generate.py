"""Write the whole built-in sample to a folder, byte-identical per seed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from glacierfacies import terrain
from glacierfacies._io import atomic_output, check_output_folder
from glacierfacies.classes import CLASS_NAMES, CLASSES, NODATA_CLASS, class_index, colour_table
from glacierfacies.errors import InputError
from glacierfacies.sample.wgms_like import _write_wgms
from glacierfacies.sample.world import (
    _SCENES,
    CRS_EPSG,
    DEM_NODATA,
    HEIGHT,
    PIXEL_M,
    WIDTH,
    X0,
    Y0,
    _date_states,
    _make_world,
    _opacity,
    _render,
)
from glacierfacies.sample.writers import (
    _FLIPS,
    FLIP_FRACTION,
    _glacier_ids,
    _landsat_nodata,
    _outlines,
    _sample_labels,
    _scene_centre_lonlat,
    _write_gpkg,
    _write_landsat,
    _write_s2,
    _write_tif,
)

_README = """\
glacierfacies built-in sample (seed {seed}) -- a synthetic but realistic glacier world.
Everything here is made up by glacierfacies.sample (glaciers, names and ids are fictitious);
rasters are on one UTM 32N (EPSG:32632) grid, upper-left corner ({x0:.0f}, {y0:.0f}),
{w} x {h} pixels of 10 m; the 20 m and 30 m grids nest in it.

dem.tif            elevation, float32 metres, nodata -9999
outlines.gpkg      one polygon per glacier: rgi_id, name, region, wgms_id, area_km2
scenes/            one folder per scene, laid out as the real products:
  S2B_MSIL2A_*.SAFE/  Sentinel-2 L2A-like: GRANULE/*/IMG_DATA/R10m/*_B02_10m.tif (B02 B03
                      B04 B08), R20m/*_B11_20m.tif (B11 B12); GeoTIFF (.tif) instead of JPEG2000.
                      uint16, reflectance = (DN - 1000) / 10000 (BOA_ADD_OFFSET -1000,
                      QUANTIFICATION 10000, baseline 05.09), 0 = nodata. MTD_MSIL2A.xml
                      (PRODUCT_START_TIME, ...) and GRANULE/*/MTD_TL.xml (Mean_Sun_Angle).
  LC0[89]_L2SP_*/     Landsat 8/9 Collection-2 Level-2-like: *_SR_B2..B7.TIF (30 m, uint16,
                      reflectance = DN * 2.75e-5 - 0.2, 0 = nodata) and *_MTL.txt.
labels.gpkg        labelled points: point_id, class, glacier (rgi_id), scene_id, date, sensor,
                   region; ~10% of the classes are deliberately wrong
flipped_labels.csv point_id, true_class, given_class of the wrong labels
truth/             class_<scene_id>.tif: true class map (uint8 codes in classes.py order,
                   255 = not a labelled surface), facies_<scene_id>.tif: the surface under
                   cloud and shadow, aar_truth.csv: per glacier and scene the true AAR
                   (snow / glacier area seen through clouds: firn exposed below the snowline
                   is ablation area; aar_full ignores cloud), aar_snow_firn, aar_with_refrozen
                   (snow + refrozen-like), observed_fraction, snowline_m (lower limit of snow)
                   and firnline_m (lower limit of snow + firn), the generator's own lines
                   before any noise; mass_balance_model.csv: the per-glacier relation used
                   for wgms/
wgms/              WGMS FoG-layout tables, 2004-2023: WGMS-FoG-2021-05-E-MASS-BALANCE-OVERVIEW.csv
                   (ELA, AAR in percent) and mbdata/mbdata_WGMS-NNNNN.csv (balances in mm w.e.);
                   annual balance = slope * (AAR - AAR0) + noise; in 2022 and 2023 AAR equals
                   aar_full of the end-of-season scene (snow only) and ELA its snowline_m
"""


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    parent = out_dir.parent
    check_output_folder(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(parent, "output folder is not writable")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder")
    if out_dir.exists() and not overwrite:
        raise InputError(out_dir, "output exists; pass --overwrite to replace it")


def write_sample(out_dir: str | os.PathLike, seed: int = 0, overwrite: bool = False) -> str:
    """Write the built-in sample to `out_dir` (atomically) and return a short summary.

    Deterministic: the same seed gives byte-identical files; another seed another world.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(out_dir, f"seed must be an integer >= 0, got {seed!r}")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    try:
        return _generate(out_dir, seed, overwrite)
    except OSError as exc:  # unwritable, read-only or full file system: one line, no traceback
        raise InputError(out_dir, f"cannot write the sample: {exc.strerror or exc}") from exc


def _generate(out_dir: Path, seed: int, overwrite: bool) -> str:
    import geopandas as gpd
    import pandas as pd

    from glacierfacies.progress import tqdm

    streams = np.random.SeedSequence(int(seed)).spawn(5)
    rng_world, rng_state, rng_label, rng_wgms = (np.random.default_rng(s) for s in streams[:4])
    scene_rngs = [np.random.default_rng(s) for s in streams[4].spawn(len(_SCENES))]

    world = _make_world(rng_world)
    outlines = _outlines(world)
    states = _date_states(world, rng_state)
    lon, lat = _scene_centre_lonlat()
    glacier_mask = world.glacier > 0
    _, (ir, ic) = ndimage.distance_transform_edt(~glacier_mask, return_indices=True)
    nearest = world.glacier[ir, ic]
    snow_code, firn_code = class_index("snow"), class_index("firn")
    refrozen = class_index("refrozen-like")
    cloud_code, shadow_code = class_index("cloud"), class_index("shadow")

    with atomic_output(out_dir, overwrite=overwrite) as tmp:
        tmp.mkdir()
        _write_tif(tmp / "dem.tif", world.dem, PIXEL_M, DEM_NODATA, descriptions=("elevation_m",))
        _write_gpkg(outlines, tmp / "outlines.gpkg", "outlines")
        labels, aar_rows, end_truth = [], [], {}
        for spec, rng in tqdm(list(zip(_SCENES, scene_rngs, strict=True)), desc="sample scenes",
                              unit="scene", disable=None):
            state = states[spec.date]
            az, el = (float(v) for v in terrain.solar_position(spec.time, lat, lon))
            az, el = round(az, 6), round(el, 6)  # as written to the metadata
            shadow = terrain.cast_shadow(world.dem, PIXEL_M, az, el)
            is_landsat = spec.sensor != "sentinel2"
            opacity = _opacity(state.cloud_field, state.cloud_thr, (5, -8) if is_landsat else (0, 0))
            valid = np.ones((HEIGHT, WIDTH), bool)
            nodata30 = None
            if is_landsat:
                nodata30 = _landsat_nodata(spec, world)
                valid = ~np.repeat(np.repeat(nodata30, 3, 0), 3, 1)
            facies = state.facies.copy()
            classes = facies.copy()
            classes[(facies != NODATA_CLASS) & shadow] = shadow_code
            classes[opacity >= 0.5] = cloud_code
            facies[~valid] = NODATA_CLASS
            classes[~valid] = NODATA_CLASS
            refl = _render(world, state, spec, az, el, shadow, opacity, rng)
            if is_landsat:
                _write_landsat(tmp / "scenes", spec, refl, nodata30, az, el, rng)
            else:
                _write_s2(tmp / "scenes", spec, refl, az, el, rng)
            cmap = colour_table()
            _write_tif(tmp / "truth" / f"class_{spec.scene_id}.tif", classes, PIXEL_M,
                       NODATA_CLASS, colormap=cmap)
            _write_tif(tmp / "truth" / f"facies_{spec.scene_id}.tif", facies, PIXEL_M,
                       NODATA_CLASS, colormap=cmap)
            for lab in _sample_labels(spec, classes, opacity, nearest, rng_label):
                labels.append({**lab, "spec": spec})
            for gi in range(1, len(world.specs) + 1):
                gl = world.glacier == gi
                seen = gl & valid & (classes != cloud_code)
                acc = facies == snow_code  # snow only: exposed firn is ablation area
                snow_firn = acc | (facies == firn_code)
                n_gl, n_seen = int(gl.sum()), int(seen.sum())
                aar_full = float((gl & acc).sum() / n_gl)
                aar_rows.append({
                    "glacier": _glacier_ids(gi)[0], "name": world.specs[gi - 1].name,
                    "scene_id": spec.scene_id, "date": spec.date, "sensor": spec.sensor,
                    "end_of_season": spec.season == "end",
                    "aar": round(float((seen & acc).sum() / max(n_seen, 1)), 8),
                    "aar_snow_firn": round(float((seen & snow_firn).sum() / max(n_seen, 1)), 8),
                    "aar_with_refrozen": round(float((seen & (acc | (facies == refrozen))).sum()
                                                     / max(n_seen, 1)), 8),
                    "aar_full": round(aar_full, 8),
                    "observed_fraction": round(n_seen / n_gl, 8),
                    "snowline_m": round(state.snowline[gi], 2),
                    "firnline_m": round(state.firnline[gi], 2),
                    "glacier_area_km2": n_gl * PIXEL_M**2 / 1e6,
                })
                if spec.season == "end":
                    end_truth[(gi, spec.year)] = (round(aar_full, 8), state.snowline[gi], spec.date)

        # labels: ids, ~10% flips, GeoPackage + record
        n = len(labels)
        weight = np.array([1.0 if c.is_facies else 0.25
                           for c in (CLASSES[class_index(lab["true_class"])] for lab in labels)])
        flip_idx = set(rng_label.choice(n, size=round(FLIP_FRACTION * n), replace=False,
                                        p=weight / weight.sum()).tolist())
        records, flipped = [], []
        for pid, lab in enumerate(labels):
            spec, gi = lab["spec"], lab["glacier_i"]
            given = lab["true_class"]
            if pid in flip_idx:
                options = _FLIPS[given]
                given = str(rng_label.choice(list(options), p=list(options.values())))
                flipped.append({"point_id": pid, "true_class": lab["true_class"],
                                "given_class": given, "scene_id": spec.scene_id})
            records.append({
                "point_id": pid, "class": given, "glacier": _glacier_ids(gi)[0],
                "scene_id": spec.scene_id, "date": spec.date, "sensor": spec.sensor,
                "region": world.specs[gi - 1].region,
                "x": X0 + (lab["col"] + 0.5) * PIXEL_M, "y": Y0 - (lab["row"] + 0.5) * PIXEL_M,
            })
        table = pd.DataFrame(records)
        points = gpd.GeoDataFrame(table.drop(columns=["x", "y"]),
                                  geometry=gpd.points_from_xy(table.x, table.y),
                                  crs=f"EPSG:{CRS_EPSG}")
        _write_gpkg(points, tmp / "labels.gpkg", "labels")
        pd.DataFrame(flipped, columns=["point_id", "true_class", "given_class", "scene_id"]).to_csv(
            tmp / "flipped_labels.csv", index=False, lineterminator="\n")
        pd.DataFrame(aar_rows).to_csv(tmp / "truth" / "aar_truth.csv", index=False,
                                      lineterminator="\n")
        params = _write_wgms(tmp / "wgms", world, end_truth, rng_wgms)
        pd.DataFrame(params).round(6).to_csv(tmp / "truth" / "mass_balance_model.csv",
                                             index=False, lineterminator="\n")
        (tmp / "README.txt").write_text(
            _README.format(seed=seed, x0=X0, y0=Y0, w=WIDTH, h=HEIGHT), encoding="utf-8")
        size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                digest.update(p.relative_to(tmp).as_posix().encode())
                digest.update(p.read_bytes())

    counts = pd.Series([r["class"] for r in records]).value_counts()
    per_class = ", ".join(f"{c} {int(counts.get(c, 0))}" for c in CLASS_NAMES)
    lines = [
        f"wrote the built-in sample (seed {seed}) to {out_dir} ({size / 1e6:.1f} MB, "
        f"sha256 {digest.hexdigest()[:12]})",
        f"  {len(world.specs)} glaciers in 2 regions, DEM {WIDTH}x{HEIGHT} px of 10 m "
        f"(EPSG:{CRS_EPSG})",
        f"  {len(_SCENES)} scenes: "
        + ", ".join(f"{s.sensor} {s.date}" for s in _SCENES),
        f"  {len(records)} labels ({len(flipped)} deliberately wrong): {per_class}",
        f"  truth in {out_dir / 'truth'}, WGMS-like tables in {out_dir / 'wgms'}",
    ]
    return "\n".join(lines)

