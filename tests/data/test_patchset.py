"""PatchSet store, folds, normalisation, building from feature stacks, the published layout
and point tables. Synthetic inputs are made here; the sample test runs once scene.py and
sample.py exist."""

from __future__ import annotations

import datetime as dt
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin

from glacierfacies.classes import CLASS_NAMES
from glacierfacies.data.build import build_patchset
from glacierfacies.data.folds import assign_folds, validation_fold
from glacierfacies.data.normalisation import apply_minmax, fit_minmax
from glacierfacies.data.patchset import PatchSet, load_arrays
from glacierfacies.data.points import import_points
from glacierfacies.data.published import export_published, import_published
from glacierfacies.errors import InputError
from glacierfacies.features import FEATURE_NAMES, OPTICAL_BANDS

GLACIERS = ["hef", "kesselwand", "gepatsch", "vernagt", "rhone", "aletsch", "morteratsch"]


# ---------------------------------------------------------------- helpers


def write_published(folder: Path, n: int = 500, size: int = 33, seed: int = 0) -> pd.DataFrame:
    """A synthetic folder in the published layout; returns what each file holds."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        glacier = GLACIERS[i % len(GLACIERS)]
        fold = GLACIERS.index(glacier) % 6
        date = f"20{18 + i % 5}0{7 + i % 3}1{i % 10}"
        cls = CLASS_NAMES[rng.integers(8)]
        sensor = "S2" if i % 2 else "L8"
        name = f"{fold}_{glacier}_{date}_{sensor}_{i:05d}_{cls}.tif"
        data = rng.normal(size=(11, size, size)).astype(np.float32)
        x0, y0 = 600000.0 + 10 * i, 5200000.0
        with rasterio.open(folder / name, "w", driver="GTiff", width=size, height=size,
                           count=11, dtype="float32", crs="EPSG:32632",
                           transform=from_origin(x0, y0, 10, 10)) as dst:
            dst.write(data)
        rows.append({"name": name, "fold": fold, "glacier": glacier, "class": cls,
                     "date": f"{date[:4]}-{date[4:6]}-{date[6:]}", "data": data,
                     "x": x0 + 10 * (size // 2) + 5, "y": y0 - 10 * (size // 2) - 5})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("pub") / "patches"
    return folder, write_published(folder, n=500)


def use_fake_stacks(monkeypatch, stacks: dict[str, types.SimpleNamespace]) -> None:
    """Serve prepared feature stacks in place of the scene readers and the stack builder;
    a window grid (dataset build reads windows around its points) gets the stack's crop."""
    import glacierfacies.scenes.reader as reader
    import glacierfacies.stack as stack
    from glacierfacies.scenes.grid import Grid

    def full_grid(sid):
        st = stacks[sid]
        return Grid(st.crs, st.transform, *st.features.shape[1:])

    def read_scene(path, grid=None, band_map=None, scale=None, offset=None, options=None):
        sid = Path(path).name
        return types.SimpleNamespace(**vars(stacks[sid].scene), grid=grid or full_grid(sid))

    def build_feature_stack(scene, dem_path, outlines_path, require_outline=True,
                            context=None, device=None):
        st, g = stacks[scene.scene_id], scene.grid
        c0 = round((g.transform.c - st.transform.c) / st.transform.a)
        r0 = round((g.transform.f - st.transform.f) / st.transform.e)
        _, h, w = st.features.shape
        feats = np.full((11, g.height, g.width), np.nan, np.float32)
        rs, cs = max(r0, 0), max(c0, 0)
        re_, ce = min(r0 + g.height, h), min(c0 + g.width, w)
        feats[:, rs - r0 : re_ - r0, cs - c0 : ce - c0] = st.features[:, rs:re_, cs:ce]
        return types.SimpleNamespace(features=feats, observed=np.ones(g.shape, bool),
                                     transform=g.transform, crs=st.crs, scene=scene)

    monkeypatch.setattr(reader, "read_scene", read_scene)
    monkeypatch.setattr(reader, "scene_grid", lambda path, resolution_m=10.0: full_grid(
        Path(path).name))
    monkeypatch.setattr(reader, "scene_ids", lambda paths: [Path(p).name for p in paths])
    monkeypatch.setattr(stack, "build_feature_stack", build_feature_stack)
    monkeypatch.setattr(stack, "terrain_context", lambda *a, **k: None)


def make_stack(scene_id: str, sensor: str, x0: float, seed: int, h: int = 60, w: int = 80):
    from rasterio.crs import CRS

    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(11, h, w)).astype(np.float32)
    feats[:, 50:, 70:] = np.nan  # an invalid corner
    scene = types.SimpleNamespace(scene_id=scene_id, sensor=sensor,
                                  acquired=dt.datetime(2021, 8, 15, 10, 30))
    return types.SimpleNamespace(features=feats, transform=from_origin(x0, 5200000, 10, 10),
                                 crs=CRS.from_epsg(32632), scene=scene)


# ---------------------------------------------------------------- build from scenes


def test_build_from_fake_stacks(tmp_path, monkeypatch):
    import geopandas as gpd
    from shapely.geometry import Point

    stacks = {"A": make_stack("A", "sentinel2", 600000, 1), "B": make_stack("B", "landsat9",
                                                                           601000, 2)}
    use_fake_stacks(monkeypatch, stacks)
    rows, pts = [], []
    # (scene, row, col): interior points, an edge point and one in the NaN corner per scene
    cells = [(r, c) for r in (10, 20, 30, 40) for c in (10, 30, 50)] + [(2, 40), (55, 75)]
    for sid, st in stacks.items():
        for j, (r, c) in enumerate(cells):
            x, y = rasterio.transform.xy(st.transform, r, c)
            pts.append(Point(x, y))
            rows.append({"class": CLASS_NAMES[j % 8], "glacier": f"g{(j % 7)}", "scene_id": sid,
                         "date": "2021-08-15", "sensor": st.scene.sensor, "region": "alps",
                         "point_id": f"{sid}{j}", "r": r, "c": c})
    gdf = gpd.GeoDataFrame(rows, geometry=pts, crs=32632).to_crs(4326)  # exercise reprojection
    labels = tmp_path / "labels.gpkg"
    gdf.to_file(labels)
    with pytest.warns(UserWarning, match="skipped 1 point"):
        ps = build_patchset(["A", "B"], "dem.tif", "outlines.gpkg", labels, patch_size=9,
                            features="optical+elevation", k_folds=3, out_dir=tmp_path / "ds")
    summ = ps.provenance["summary"]
    assert (summ["labels"], summ["kept"], summ["skipped_edge"], summ["skipped_invalid"]) == (
        28, 24, 2, 2)
    assert ps.patches.shape == (24, 7, 9, 9) and isinstance(ps.patches, np.memmap)
    for i, row in ps.table.iterrows():
        src = gdf[gdf.point_id == row.point_id].iloc[0]
        st = stacks[row.scene_id]
        expect = st.features[:7, src.r - 4:src.r + 5, src.c - 4:src.c + 5]
        np.testing.assert_array_equal(ps.patches[i], expect)
        assert CLASS_NAMES[ps.labels[i]] == row["class"] == src["class"]
    assert set(ps.table.sensor) == {"sentinel2", "landsat9"}
    assert ps.table.crs.unique().tolist() == ["EPSG:32632"]
    # glaciers never split, 3 folds used
    assert (ps.table.groupby("glacier").fold.nunique() == 1).all()
    assert sorted(ps.table.fold.unique()) == [0, 1, 2]
    assert ps.feature_names == FEATURE_NAMES[:7]


def test_build_bad_labels(tmp_path, monkeypatch):
    import geopandas as gpd
    from shapely.geometry import Point

    stacks = {"A": make_stack("A", "sentinel2", 600000, 1)}
    use_fake_stacks(monkeypatch, stacks)
    def points(path, scene_id, x, y):
        gpd.GeoDataFrame({"class": ["ice", "snow"], "glacier": ["g1", "g2"],
                          "scene_id": [scene_id] * 2},
                         geometry=[Point(x, y), Point(600100, 5199900)], crs=32632).to_file(path)
        return path

    labels = points(tmp_path / "labels.gpkg", "Z", 600100, 5199900)
    with pytest.raises(InputError, match="2 label.s. fall in no given scene"):
        build_patchset(["A"], "d", "o", labels, k_folds=2, out_dir=tmp_path / "ds")
    far = points(tmp_path / "far.gpkg", "A", 700000, 5100000)
    with pytest.raises(InputError, match="1 label.s. of scene A lie outside it"):
        build_patchset(["A"], "d", "o", far, k_folds=2, out_dir=tmp_path / "ds")
    ok = points(tmp_path / "ok.gpkg", "A", 600200, 5199800)
    with pytest.raises(InputError, match=r"fold\(s\) \[2\] would have no glacier"):
        build_patchset(["A"], "d", "o", ok, k_folds=3, out_dir=tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------- folds, store, normalisation


def test_folds_balance_and_errors():
    glaciers = ["a"] * 50 + ["b"] * 40 + ["c"] * 30 + ["d"] * 20 + ["e"] * 10 + ["f"] * 10
    folds = assign_folds(glaciers, k=3)
    loads = np.bincount(folds, minlength=3)
    assert sorted(loads.tolist()) == [50, 50, 60]
    g = np.array(glaciers)
    for name in set(glaciers):
        assert len(np.unique(folds[g == name])) == 1
    assert np.array_equal(assign_folds(glaciers, k=3, seed=1), assign_folds(glaciers, 3, 1))
    with pytest.raises(InputError, match="no glacier"):
        assign_folds(glaciers, k=7)
    assert [validation_fold(t, 6) for t in range(6)] == [5, 0, 1, 2, 3, 4]


def test_store_roundtrip_subset_minmax(tmp_path, published):
    folder, truth = published
    ps = import_published(folder, progress=False)
    ps.save(tmp_path / "ds")
    back = PatchSet.load(tmp_path / "ds")
    assert isinstance(back.patches, np.memmap)
    np.testing.assert_array_equal(back.patches, ps.patches)
    pd.testing.assert_frame_equal(back.table, ps.table)
    arrays = load_arrays(tmp_path / "ds")  # numpy-only path for a bare GPU box
    np.testing.assert_array_equal(arrays["labels"], ps.labels)
    np.testing.assert_array_equal(arrays["fold"], ps.folds)
    assert arrays["glacier"].tolist() == ps.table.glacier.tolist()
    assert arrays["meta"]["patch_size"] == 33
    sub = back.subset(np.arange(10, 20))
    np.testing.assert_array_equal(sub.patches, ps.patches[10:20])
    opt = back.select_features("optical")
    assert opt.patches.shape[1] == 6 and opt.feature_names == OPTICAL_BANDS
    train, val, test = back.fold_split(0)
    assert set(back.folds[val]) == {validation_fold(0, back.fold_config["k"])}
    assert not set(back.folds[train]) & {0, validation_fold(0, back.fold_config["k"])}
    norm = fit_minmax(back, train)
    expect_min = ps.patches[train].min(axis=(0, 2, 3))
    np.testing.assert_allclose(norm["min"], expect_min)
    np.testing.assert_allclose(norm["max"], ps.patches[train].max(axis=(0, 2, 3)))
    planted = np.array(ps.patches)
    planted[test[0], 0, 0, 0] = 100.0  # an extreme test-fold value must not leak into stats
    assert fit_minmax(planted, train)["max"][0] == norm["max"][0] < 100
    assert fit_minmax(planted, np.arange(len(ps)))["max"][0] == 100
    x = apply_minmax(np.asarray(back.patches[train]), norm)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x.min(axis=(0, 2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(x.max(axis=(0, 2, 3)), 1, atol=1e-6)
    torch = pytest.importorskip("torch")
    xt = apply_minmax(torch.from_numpy(np.array(back.patches[:4])), norm)
    np.testing.assert_allclose(xt.numpy(), apply_minmax(np.asarray(back.patches[:4]), norm),
                               rtol=1e-6)


# ---------------------------------------------------------------- published layout


def test_import_published_values_and_roundtrip(tmp_path, published):
    folder, truth = published
    ps = import_published(folder, out_dir=tmp_path / "ds", workers=2, progress=False)
    assert len(ps) == 500 and ps.patch_size == 33 and ps.feature_names == FEATURE_NAMES
    by_name = truth.set_index(truth.name.str[:-4])
    t = ps.table.set_index("point_id")
    assert set(t.index) == set(by_name.index)
    for col in ("fold", "glacier", "class", "date"):
        assert (t[col] == by_name.loc[t.index, col]).all(), col
    np.testing.assert_allclose(t.x, by_name.loc[t.index, "x"])
    for i in (0, 137, 499):
        pid = ps.table.point_id[i]
        np.testing.assert_array_equal(ps.patches[i], by_name.loc[pid, "data"])
        assert CLASS_NAMES[ps.labels[i]] == by_name.loc[pid, "class"]
    assert ps.fold_config["method"] == "published"
    assert set(ps.table.sensor) == {"sentinel2", "landsat8"}
    # export -> import is bit-exact, same names
    out = export_published(ps, tmp_path / "exported", workers=2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(truth.name)
    again = import_published(out, progress=False)
    assert again.patches.tobytes() == np.asarray(ps.patches).tobytes()
    pd.testing.assert_frame_equal(again.table, ps.table)


@pytest.mark.parametrize("case,match", [
    ("fields", "name lacks fields"),
    ("class", "unknown class 'slush'"),
    ("size", "patch is 31x31, expected 33x33"),
    ("bands", "has 10 bands, expected 11"),
    ("gap", r"fold\(s\) \[6, 7, 8\] have no glacier"),
])
def test_import_published_bad_input(tmp_path, case, match):
    folder = tmp_path / "p"
    write_published(folder, n=12)
    bad = {"fields": "3_hef_ice.tif", "class": "0_hef_20210815_S2_9_slush.tif",
           "size": "0_hef_20210815_S2_9_ice.tif", "bands": "0_hef_20210815_S2_9_ice.tif",
           "gap": "9_hef_20210815_S2_9_ice.tif"}[case]
    size, count = (31, 11) if case == "size" else (33, 10 if case == "bands" else 11)
    with rasterio.open(folder / bad, "w", driver="GTiff", width=size, height=size, count=count,
                       dtype="float32") as dst:
        dst.write(np.zeros((count, size, size), np.float32))
    with pytest.raises(InputError, match=match) as err:
        import_published(folder, out_dir=tmp_path / "ds", progress=False)
    assert (bad if case != "gap" else "p:") in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


# ---------------------------------------------------------------- point tables


def test_import_points_csv(tmp_path):
    rng = np.random.default_rng(3)
    n = 60
    codes = rng.integers(1, 5, n)  # 4 = a code we do not map
    df = pd.DataFrame({f"B{b}": rng.integers(0, 10000, n) for b in (2, 3, 4, 8, 11, 12)})
    df["facies"] = codes
    df["site"] = [GLACIERS[i % 7] for i in range(n)]
    df[".geo"] = [f'{{"type":"Point","coordinates":[10.{i:02d},46.8]}}' for i in range(n)]
    path = tmp_path / "points.csv"
    df.to_csv(path, index=False)
    cmap = "1=ice,2=snow,3=firn"
    with pytest.warns(UserWarning, match=f"dropped {(codes == 4).sum()} row"):
        ps = import_points(path, "sentinel2", class_column="facies", class_map=cmap,
                           glacier_column="site", scale=1e-4, offset=-0.1, k_folds=3)
    keep = codes != 4
    assert ps.patches.shape == (keep.sum(), 6, 1, 1) and ps.patch_size == 1
    np.testing.assert_allclose(ps.patches[:, 4, 0, 0], df.B11[keep] * 1e-4 - 0.1, rtol=1e-6)
    assert list(ps.table["class"]) == [{1: "ice", 2: "snow", 3: "firn"}[c] for c in codes[keep]]
    assert (ps.table.groupby("glacier").fold.nunique() == 1).all()
    np.testing.assert_allclose(ps.table.x, [10 + i / 100 for i in np.flatnonzero(keep)])
    with pytest.raises(InputError, match=r"unmapped class"):
        import_points(path, "sentinel2", class_column="facies", class_map=cmap,
                      glacier_column="site", strict=True)
    with pytest.raises(InputError, match=r"missing mapped column\(s\) \['SR_B2'"):
        import_points(path, "landsat89", class_column="facies", glacier_column="site")


def test_import_points_gpkg(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point

    gdf = gpd.GeoDataFrame({**{b: np.linspace(0, 1, 12) + i for i, b in enumerate(OPTICAL_BANDS)},
                            "class": ["ice", "snow", "refrozen", "cloud"] * 3,
                            "glacier": [f"g{i % 6}" for i in range(12)]},
                           geometry=[Point(600000 + i, 5200000) for i in range(12)], crs=32632)
    gdf.to_file(tmp_path / "p.gpkg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ps = import_points(tmp_path / "p.gpkg")
    assert ps.table["class"].tolist()[:4] == ["ice", "snow", "refrozen-like", "cloud"]
    np.testing.assert_allclose(ps.patches[:, 2, 0, 0], np.linspace(0, 1, 12) + 2)
    assert ps.table.crs[0] == "EPSG:32632" and ps.table.x[3] == 600003


# ---------------------------------------------------------------- CLI


def test_cli_dataset(tmp_path, published):
    from click.testing import CliRunner

    from glacierfacies.cli import cli

    if "dataset" not in cli.commands:
        pytest.skip("dataset CLI group not registered")
    folder, _ = published
    runner = CliRunner()
    res = runner.invoke(cli, ["dataset", "import-published", str(folder), "-o",
                              str(tmp_path / "ds"), "--dtype", "float16"])
    assert res.exit_code == 0, res.output
    assert "500 patches" in res.output
    res = runner.invoke(cli, ["dataset", "info", str(tmp_path / "ds")])
    assert res.exit_code == 0 and "float16" in res.output and "refrozen-like" in res.output
    res = runner.invoke(cli, ["dataset", "export-published", str(tmp_path / "ds"), "-o",
                              str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "out").glob("*.tif"))) == 500


# ---------------------------------------------------------------- the built-in sample


def test_sample_patches_equal_feature_stack(sample_dir, tmp_path):
    import geopandas as gpd

    from glacierfacies.scenes.reader import find_scenes, read_scene, scene_ids
    from glacierfacies.stack import build_feature_stack

    scenes = find_scenes(sample_dir / "scenes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ps = build_patchset(scenes, sample_dir / "dem.tif", sample_dir / "outlines.gpkg",
                            sample_dir / "labels.gpkg", patch_size=33, out_dir=tmp_path / "ds")
    labels = gpd.read_file(sample_dir / "labels.gpkg")
    summ = ps.provenance["summary"]
    assert summ["kept"] + summ["skipped_edge"] + summ["skipped_invalid"] == len(labels)
    assert summ["kept"] > 0.9 * len(labels)
    assert ps.table.point_id.isin(labels.point_id.astype(str)).all()
    # one scene per sensor family, 5 points each: the patch is the stack window at the point
    family = ps.table.sensor.str.slice(0, 4)
    assert set(family) == {"sent", "land"}
    by_path = dict(zip(scene_ids(scenes), scenes, strict=True))
    for fam in ("sent", "land"):
        sid = ps.table.scene_id[family == fam].iloc[0]
        stack = build_feature_stack(read_scene(by_path[sid]), sample_dir / "dem.tif",
                                    sample_dir / "outlines.gpkg")
        rows = ps.table[ps.table.scene_id == sid].index[::37][:5]
        assert len(rows) == 5
        for i in rows:
            r, c = rasterio.transform.rowcol(stack.transform, ps.table.x[i], ps.table.y[i])
            want = stack.features[:, r - 16:r + 17, c - 16:c + 17]
            # terrain exact; Landsat's 30 m -> 10 m optical bands within 1 float32 ulp
            # (GDAL's bilinear weights depend on the window origin, see test_scenes)
            np.testing.assert_array_equal(ps.patches[i][6:], want[6:])
            np.testing.assert_array_max_ulp(ps.patches[i][:6], want[:6], maxulp=1)
            lab = labels[labels.point_id.astype(str) == ps.table.point_id[i]].iloc[0]
            assert lab["class"] == ps.table["class"][i] and lab.scene_id == sid


def test_read_batch_equals_fancy_index_with_and_without_torch(tmp_path, monkeypatch):
    from glacierfacies.data.patchset import PatchSet

    rng = np.random.default_rng(3)
    patches = rng.random((40, 3, 5, 5)).astype(np.float16)
    np.save(tmp_path / "p.npy", patches)
    ps = PatchSet.__new__(PatchSet)
    ps.patches = np.load(tmp_path / "p.npy", mmap_mode="r")
    idx = np.sort(rng.choice(40, 12, replace=False))
    buf = np.empty((12, 3, 5, 5), np.float16)
    assert ps.read_batch(idx, out=buf) is buf and np.array_equal(buf, patches[idx])
    monkeypatch.setitem(sys.modules, "torch", None)  # numpy fallback
    assert np.array_equal(ps.read_batch(idx), patches[idx])
    with pytest.raises(ValueError, match="out must be"):
        ps.read_batch(idx, out=np.empty((11, 3, 5, 5), np.float16))
