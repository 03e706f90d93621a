"""Tests for issue 6: smoothing, exact dense tiled inference, COG writing, map / map-many."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glacierfacies.mapping.config import MapConfig
from glacierfacies.mapping.inference import dense_predict, patch_predict
from glacierfacies.model.member import Member
from glacierfacies.model.network import TwoScaleCNN
from glacierfacies.smoothing import mode_filter, mode_filter_reference

torch.set_num_threads(2)


def _model(seed: int = 0, width: int = 6, patch_size: int = 27) -> TwoScaleCNN:
    torch.manual_seed(seed)
    m = TwoScaleCNN(11, width=width, patch_size=patch_size)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.3, 0.3)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


# ---------------------------------------------------------------- smoothing


@pytest.mark.parametrize("n_classes,p_nodata", [(8, 0.0), (8, 0.25), (3, 0.6), (8, 0.95)])
def test_mode_filter_equals_generic_filter_reference(n_classes, p_nodata):
    rng = np.random.default_rng(n_classes + int(100 * p_nodata))
    classes = rng.integers(0, n_classes, (61, 47)).astype(np.uint8)
    classes[rng.random(classes.shape) < p_nodata] = 255
    fast = mode_filter(classes, n_classes=n_classes)
    ref = mode_filter_reference(classes, n_classes=n_classes)
    assert fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, ref)
    np.testing.assert_array_equal(fast == 255, classes == 255)  # nodata stays, never filled


def test_mode_filter_rules_by_hand():
    # centre 1, neighbours: four 2s, four 255 -> 2 wins (4 > 1)
    a = np.array([[2, 255, 2], [255, 1, 255], [2, 255, 2]], np.uint8)
    assert mode_filter(a)[1, 1] == 2
    # tie 3 vs 3 (centre class among them) -> centre kept
    b = np.array([[0, 0, 0], [1, 1, 255], [1, 255, 255]], np.uint8)
    assert mode_filter(b)[1, 1] == 1
    # tie between two non-centre classes (centre has fewer) -> smaller code
    c = np.array([[4, 4, 3], [3, 5, 255], [255, 255, 255]], np.uint8)
    assert mode_filter(c)[1, 1] == 3
    # an isolated pixel in a uniform field is removed
    d = np.full((5, 5), 0, np.uint8)
    d[2, 2] = 6
    assert (mode_filter(d) == 0).all()
    with pytest.raises(ValueError):
        mode_filter(np.full((3, 3), 9, np.uint8))


# ---------------------------------------------------------------- dense inference


@pytest.fixture(scope="module")
def raster():
    rng = np.random.default_rng(1)
    h, w = 150, 141
    f = rng.normal(size=(11, h, w)).astype(np.float32) * 3 + 1
    f[:, 40:42, 60:63] = np.nan  # invalid input pixels
    valid = np.ones((h, w), bool)
    valid[100:102, 100:101] = False
    mask = np.zeros((h, w), bool)
    mask[15:140, 10:130] = True
    mask[70:75, :] = False
    norm = {"min": list(rng.normal(size=11) - 2), "max": list(rng.normal(size=11) + 4)}
    return f, valid, mask, norm


def test_dense_is_tile_size_independent_and_equals_patches(raster):
    f, valid, mask, norm = raster
    members = [
        Member(_model(0), temperature=1.7, minimum=norm["min"], maximum=norm["max"]),
        Member(_model(1), temperature=0.8, minimum=norm["min"], maximum=norm["max"]),
    ]
    small = dense_predict(members, f, mask, valid, tile_size=48, return_probs=True)
    big = dense_predict(members, f, mask, valid, tile_size=4096, return_probs=True)
    assert small.tiles_run > 8 and big.tiles_run == 1
    np.testing.assert_array_equal(small.classes, big.classes)
    np.testing.assert_allclose(small.probs, big.probs, atol=1e-6, equal_nan=True)
    # nodata: outside the mask, windows off the scene edge, windows touching invalid input
    h, w = mask.shape
    halo = 13
    ok = small.classes != 255
    assert not ok[~mask].any()
    assert not ok[:halo].any() and not ok[:, :halo].any()
    assert not ok[h - halo :].any() and not ok[:, w - halo :].any()
    assert not ok[40 - halo : 42 + halo, 60 - halo : 63 + halo].any()
    assert not ok[100 - halo : 102 + halo, 100 - halo : 101 + halo].any()
    assert ok[mask].mean() > 0.5
    # the mapped class is the argmax of the probabilities, confidence its probability
    probs = small.probs[:, ok]
    np.testing.assert_array_equal(small.classes[ok], probs.argmax(0))
    np.testing.assert_allclose(small.confidence[ok], probs.max(0), atol=1e-6)
    assert np.isnan(small.confidence[~ok]).all()
    # >= 1000 random classified pixels: dense probabilities == per-patch model outputs
    rng = np.random.default_rng(0)
    rr, cc = np.nonzero(ok)
    pick = rng.choice(len(rr), 1000, replace=False)
    p_patch = patch_predict(members, f, rr[pick], cc[pick])
    assert np.abs(p_patch - small.probs[:, rr[pick], cc[pick]].T).max() <= 1e-5
    # ensemble = mean of calibrated probabilities of the members
    one = patch_predict(members[0], f, rr[pick[:50]], cc[pick[:50]])
    two = patch_predict(members[1], f, rr[pick[:50]], cc[pick[:50]])
    np.testing.assert_allclose((one + two) / 2, p_patch[:50], atol=1e-6)


def test_dense_normalisation_matches_patches_apply_minmax(raster):
    from glacierfacies.data.normalisation import apply_minmax
    from glacierfacies.mapping.inference import _prepare_input

    f, _, _, norm = raster
    m = Member(_model(0), minimum=norm["min"], maximum=norm["max"])
    x = torch.from_numpy(np.nan_to_num(f[:, :40, :40]))
    np.testing.assert_array_equal(_prepare_input(m, x).numpy(), apply_minmax(x, norm).numpy())


def test_dense_feature_subset_and_skipped_tiles():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(11, 120, 130)).astype(np.float32)
    torch.manual_seed(3)
    model = TwoScaleCNN(3, width=4, patch_size=27).eval()
    member = Member(model, feature_index=[6, 0, 2])
    mask = np.zeros((120, 130), bool)
    mask[66:76, 66:76] = True
    pred = dense_predict(member, f, mask, tile_size=32, return_probs=True)
    assert pred.tiles_run == 1 and pred.tiles_skipped == 4 * 5 - 1
    p = patch_predict(member, f, np.array([70]), np.array([67]))
    np.testing.assert_allclose(p[0], pred.probs[:, 70, 67], atol=1e-6)
    assert (pred.classes[mask] != 255).all() and (pred.classes[~mask] == 255).all()
    with pytest.raises(ValueError, match="unknown device"):
        dense_predict(member, f, mask, device="tpu")


# ---------------------------------------------------------------- writing


def test_write_outputs_cog_colour_table_names_overviews_atomic(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    from glacierfacies.classes import CLASS_NAMES, colour_table
    from glacierfacies.errors import InputError
    from glacierfacies.mapping.blockwrite import write_outputs

    rng = np.random.default_rng(0)
    classes = rng.integers(0, 8, (700, 600)).astype(np.uint8)
    classes[:50] = 255
    conf = rng.random((700, 600)).astype(np.float32)
    conf[classes == 255] = np.nan
    out, cout = tmp_path / "facies.tif", tmp_path / "conf.tif"
    tr = from_origin(600000, 5200000, 10, 10)
    write_outputs(classes, tr, "EPSG:32632", out, conf, cout, tags={"SCENE_ID": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf.tif", "facies.qml", "facies.tif"]
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.dtypes[0] == "uint8" and src.nodata == 255
        assert src.crs.to_epsg() == 32632 and src.transform == tr
        np.testing.assert_array_equal(src.read(1), classes)
        assert src.tags()["CLASS_NAMES"].split(",") == list(CLASS_NAMES)
        assert src.tags()["SCENE_ID"] == "x"
        assert src.tags(1)["CLASS_2"] == "debris"
        assert src.descriptions[0] == "facies class"
        assert src.overviews(1)  # mode overviews
        cmap = src.colormap(1)
        for code, rgba in colour_table().items():
            assert cmap[code] == rgba
    with rasterio.open(cout) as src:
        c = src.read(1)
        assert src.dtypes[0] == "uint8" and src.nodata == 255
        assert (c[classes == 255] == 255).all()
        ok = classes != 255
        np.testing.assert_array_equal(c[ok], np.floor(conf[ok] * 100 + 0.5).astype(np.uint8))
    qml = (tmp_path / "facies.qml").read_text()
    assert 'type="paletted"' in qml and 'label="refrozen-like"' in qml and "#50a0e6" in qml
    # no overwrite without the flag; nothing changed, no temporaries left
    before = out.stat().st_mtime_ns
    with pytest.raises(InputError, match="exists"):
        write_outputs(classes, tr, "EPSG:32632", out)
    assert out.stat().st_mtime_ns == before
    write_outputs(classes, tr, "EPSG:32632", out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf.tif", "facies.qml", "facies.tif"]
    with pytest.raises(InputError, match="output folder does not exist"):
        write_outputs(classes, tr, "EPSG:32632", tmp_path / "nope" / "f.tif")


def test_parse_buffer():
    from glacierfacies.mapping.config import parse_buffer

    assert parse_buffer("50m") == 50 and parse_buffer("0.1km") == 100 and parse_buffer(20) == 20
    assert parse_buffer(None) == 0
    for bad in ("-5m", "fifty", "5 ft"):
        with pytest.raises(ValueError):
            parse_buffer(bad)


# ---------------------------------------------------------------- whole scenes (sample)


def _save_model(path, seed, features=None, patch_size=27, temperature=1.3):
    from glacierfacies.classes import CLASS_NAMES
    from glacierfacies.features import FEATURE_NAMES
    from glacierfacies.model.card import ModelCard, save_model

    features = list(features or FEATURE_NAMES)
    torch.manual_seed(seed)
    m = TwoScaleCNN(len(features), width=6, patch_size=patch_size).eval()
    with torch.no_grad():  # an untrained net says "one class"; spread its logits
        for layer in (m.dense1, m.dense2, m.out):
            layer.weight.mul_(5.0)
        m.out.weight.mul_(5.0)
    lo = {"elevation": 1500, "slope": 0, "shadow_mask": 0, "hillshade": 0, "proximity": -1500}
    hi = {"elevation": 4000, "slope": 60, "shadow_mask": 1, "hillshade": 255, "proximity": 1500}
    card = ModelCard(
        features=features, classes=list(CLASS_NAMES), patch_size=patch_size,
        normalisation={"min": [lo.get(f, 0.0) for f in features],
                       "max": [hi.get(f, 0.8) for f in features]},
        architecture=m.kwargs, training={},
        calibration={"method": "temperature", "temperature": temperature},
    )
    save_model(m, card, path)
    return path


@pytest.fixture(scope="module")
def mapped(sample_dir, tmp_path_factory):
    from glacierfacies.scenes.reader import find_scenes

    tmp = tmp_path_factory.mktemp("maps")
    models = [_save_model(tmp / "fold0.pt", 0), _save_model(tmp / "fold1.pt", 1, temperature=0.7)]
    scenes = find_scenes(sample_dir / "scenes")
    return {"tmp": tmp, "models": models, "scenes": scenes, "dem": sample_dir / "dem.tif",
            "outlines": sample_dir / "outlines.gpkg"}


def test_map_scene_seams_exactness_and_outputs(mapped):
    import rasterio

    from glacierfacies.mapping.inference import patch_predict
    from glacierfacies.mapping.scene_map import map_scene, predict_stack
    from glacierfacies.model.card import load_members
    from glacierfacies.scenes.reader import read_scene
    from glacierfacies.stack import build_feature_stack

    d, tmp = mapped, mapped["tmp"]
    scene = [s for s in d["scenes"] if s.name.startswith("S2")][0]
    kw = dict(dem=d["dem"], outlines=d["outlines"], models=d["models"][:1], progress=False)
    r256 = map_scene(scene, out=tmp / "t256.tif", config=MapConfig(tile_size=256, smoothing=False),
                     confidence_out=tmp / "c256.tif", probabilities_out=tmp / "p256.tif", **kw)
    # tiles of 4096 (one tile) + smoothing == tiles of 256, then smoothed
    map_scene(scene, out=tmp / "t4096.tif", config=MapConfig(tile_size=4096), **kw)
    with rasterio.open(tmp / "t256.tif") as a, rasterio.open(tmp / "t4096.tif") as b:
        m256, m4096 = a.read(1), b.read(1)
    np.testing.assert_array_equal(m4096, mode_filter(m256))
    counts = np.bincount(m256[m256 != 255], minlength=8)
    assert r256.n_classified == counts.sum() > 5000 and (counts > 0).sum() >= 3
    # probabilities of the map == per-patch outputs at >= 1000 random interior glacier pixels
    members = load_members(d["models"][:1])
    stack = build_feature_stack(read_scene(scene), d["dem"], d["outlines"])
    pred = predict_stack(members, stack, tile_size=200, return_probs=True)
    np.testing.assert_array_equal(pred.classes, m256)
    rr, cc = np.nonzero(pred.classes != 255)
    pick = np.random.default_rng(0).choice(len(rr), 1000, replace=False)
    p_patch = patch_predict(members, stack.features, rr[pick], cc[pick])
    assert np.abs(p_patch - pred.probs[:, rr[pick], cc[pick]].T).max() <= 1e-5
    assert (stack.glacier_index[rr, cc] > 0).all()
    with rasterio.open(tmp / "c256.tif") as c:
        conf = c.read(1)
    ok = m256 != 255
    np.testing.assert_array_equal(conf == 255, ~ok)
    assert np.abs(conf[ok] - 100 * pred.confidence[ok]).max() <= 0.5 + 1e-3
    # map --probabilities: 8 float32 bands, the calibrated probabilities, NaN outside
    with rasterio.open(tmp / "p256.tif") as pr:
        assert pr.count == 8 and pr.dtypes[0] == "float32"
        assert pr.descriptions[1] == "probability of snow"
        probs = pr.read()
    np.testing.assert_allclose(probs[:, ok], pred.probs[:, ok], atol=1e-5)  # other tiles
    assert np.isnan(probs[:, ~ok]).all()
    np.testing.assert_array_equal(np.argmax(probs[:, ok], axis=0), m256[ok])


@pytest.mark.slow
def test_map_scene_buffer_and_block_reading(mapped):
    import rasterio

    from glacierfacies.mapping.scene_map import map_scene

    d, tmp = mapped, mapped["tmp"]
    scene = [s for s in d["scenes"] if s.name.startswith("S2")][0]
    kw = dict(dem=d["dem"], outlines=d["outlines"], models=d["models"], progress=False)
    r0 = map_scene(scene, out=tmp / "ens.tif", config=MapConfig(tile_size=4096, smoothing=False),
                   probabilities_out=tmp / "ens_p.tif", **kw)
    with rasterio.open(tmp / "ens.tif") as b, rasterio.open(tmp / "ens_p.tif") as wp:
        m0, wprobs = b.read(1), wp.read()
    ok = m0 != 255
    # a buffer adds pixels outside the outlines, never removes any
    rb = map_scene(scene, out=tmp / "buf.tif",
                   config=MapConfig(tile_size=4096, smoothing=False, buffer="50m"), **kw)
    assert rb.n_classified > r0.n_classified
    with rasterio.open(tmp / "buf.tif") as b:
        mb = b.read(1)
    np.testing.assert_array_equal(mb[ok], m0[ok])
    # block-wise reading (large-scene path) gives the whole-scene map exactly: every block
    # uses the whole scene's terrain margins and sun (stack.TerrainContext); smoothed by
    # windows with a 1 px halo == the whole-array mode filter, and the files are identical
    for name, bs in (("blocks.tif", 300), ("whole.tif", 0)):
        map_scene(scene, out=tmp / name, confidence_out=tmp / f"c_{name}",
                  config=MapConfig(tile_size=128, block_size=bs),
                  probabilities_out=tmp / f"p_{name}" if bs else None, **kw)
    with rasterio.open(tmp / "blocks.tif") as b, rasterio.open(tmp / "p_blocks.tif") as bp:
        blocks, bprobs = b.read(1), bp.read()
        assert float(b.tags()["TERRAIN_MARGIN_M"]) >= 1000
        assert "GRID_CONVERGENCE_DEG" in b.tags()
    np.testing.assert_array_equal(blocks, mode_filter(m0))
    np.testing.assert_array_equal(np.isnan(bprobs), np.isnan(wprobs))
    np.testing.assert_allclose(bprobs[:8], wprobs[:8], atol=1e-5)  # other tiles: sums differ
    np.testing.assert_array_equal(np.argmax(bprobs[:8, ok], axis=0), m0[ok])
    # bands 9..: each ensemble member's own class, the same in blocks as in one piece
    n_members = len(d["models"])
    assert bprobs.shape[0] == wprobs.shape[0] == 8 + (n_members if n_members > 1 else 0)
    if n_members > 1:
        assert (bprobs[8:, ok] == wprobs[8:, ok]).mean() > 0.999
    # the same map; only the tags naming the companions (other file names here) differ
    with rasterio.open(tmp / "blocks.tif") as b, rasterio.open(tmp / "whole.tif") as w:
        np.testing.assert_array_equal(b.read(), w.read())
        tb, tw = b.tags(), w.tags()
        assert tb.pop("CONFIDENCE") == "c_blocks.tif" and tb.pop("PROBABILITIES") == \
            "p_blocks.tif" and tw.pop("CONFIDENCE") == "c_whole.tif"
        assert tb == tw and tb["LAYER"] == "facies"
    assert (tmp / "c_blocks.tif").read_bytes() == (tmp / "c_whole.tif").read_bytes()


def test_block_windows_padded_as_on_cuda_give_the_same_map(mapped, monkeypatch):
    """The CUDA path pads each window's inputs (NaN) to shared tile shapes; the map must not
    change (checked here on the CPU by forcing the padding)."""
    from glacierfacies.mapping import scene_map

    d, tmp = mapped, mapped["tmp"]
    scene = [s for s in d["scenes"] if s.name.startswith("S2")][0]
    kw = dict(dem=d["dem"], outlines=d["outlines"], models=d["models"], progress=False)
    cfg = MapConfig(tile_size=128, block_size=300)
    scene_map.map_scene(scene, out=tmp / "win1.tif", confidence_out=tmp / "cwin1.tif",
                        config=cfg, **kw)
    monkeypatch.setattr(scene_map, "_window_multiple", lambda device: 96)
    scene_map.map_scene(scene, out=tmp / "win96.tif", confidence_out=tmp / "cwin96.tif",
                        config=cfg, **kw)
    import rasterio

    # the same rasters; only the tags naming the companions (other file names) differ
    for a, b in (("win1.tif", "win96.tif"), ("cwin1.tif", "cwin96.tif")):
        with rasterio.open(tmp / a) as ra, rasterio.open(tmp / b) as rb:
            np.testing.assert_array_equal(ra.read(), rb.read())
            ta = {k: v for k, v in ra.tags().items() if k not in ("CONFIDENCE", "PROBABILITIES")}
            tb = {k: v for k, v in rb.tags().items() if k not in ("CONFIDENCE", "PROBABILITIES")}
            assert ta == tb


def test_bad_input_one_line_errors_nothing_written(mapped, tmp_path):
    import subprocess
    import sys

    import geopandas as gpd
    import rasterio
    from rasterio.transform import Affine

    from glacierfacies.errors import InputError
    from glacierfacies.mapping.scene_map import map_scene

    d = mapped
    scene = d["scenes"][0]
    far_dem = tmp_path / "far_dem.tif"
    with rasterio.open(d["dem"]) as src:
        prof = src.profile
        prof["transform"] = Affine.translation(200_000, 0) @ src.transform
        with rasterio.open(far_dem, "w", **prof) as dst:
            dst.write(src.read())
    far_outlines = tmp_path / "far.gpkg"
    g = gpd.read_file(d["outlines"])
    g.geometry = g.geometry.translate(0, 300_000)
    g.to_file(far_outlines)
    bad_model = _save_model(tmp_path / "ndsi.pt", 0, features=["blue", "green", "ndsi"])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    base = dict(scene=scene, dem=d["dem"], outlines=d["outlines"], models=d["models"],
                out=out_dir / "f.tif", progress=False)
    cases = [
        (dict(models=[bad_model]), "ndsi"),
        (dict(dem=far_dem), "DEM does not overlap"),
        (dict(outlines=far_outlines), "outline"),
        (dict(config=MapConfig(device="tpu")), "unknown device"),
        (dict(out=tmp_path / "missing" / "f.tif"), "output folder does not exist"),
        (dict(config=MapConfig(buffer="ten metres")), "buffer"),
    ]
    for change, text in cases:
        with pytest.raises(InputError, match=text) as err:
            map_scene(**{**base, **change})
        assert "\n" not in str(err.value)
        assert list(out_dir.iterdir()) == []
    with pytest.raises(InputError, match="ndsi") as err:
        map_scene(**{**base, "models": [bad_model]})
    assert err.value.path is not None and "ndsi" in Path(err.value.path).name
    # the CLI prints one line and exits non-zero
    proc = subprocess.run(
        [sys.executable, "-m", "glacierfacies.cli", "map", str(scene), "--dem", str(d["dem"]),
         "--outlines", str(d["outlines"]), "--model", str(d["models"][0]), "-o",
         str(out_dir / "f.tif"), "--device", "tpu"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "unknown device" in proc.stderr
    assert list(out_dir.iterdir()) == []


@pytest.mark.slow
def test_map_many_local_cluster_equals_one_by_one_and_resumes(mapped, tmp_path):
    import os

    import rasterio

    from glacierfacies.mapping.distributed import map_many
    from glacierfacies.mapping.scene_map import map_scene, output_paths

    d = mapped
    scenes = d["scenes"][:4]
    kw = dict(dem=d["dem"], outlines=d["outlines"], models=d["models"][:1])
    one = tmp_path / "one"
    many = tmp_path / "many"
    one.mkdir()
    many.mkdir()
    for s in scenes:
        out, conf = output_paths(s, one, True)
        map_scene(s, out=out, confidence_out=conf, progress=False, **kw)
    res = map_many(scenes, out_dir=many, scheduler="local", workers=2, confidence=True,
                   progress=False, **kw)
    assert res.count("done") == 4, res.summary()
    for s in scenes:
        for a, b in zip(output_paths(s, one, True), output_paths(s, many, True), strict=True):
            with rasterio.open(a) as x, rasterio.open(b) as y:
                np.testing.assert_array_equal(x.read(), y.read())
                assert x.tags() == y.tags()
                if b.name.endswith("_facies.tif"):
                    assert x.colormap(1) == y.colormap(1)
    # an interrupted run: two maps missing (atomic writes: a present map is complete)
    stamps = {p: p.stat().st_mtime_ns for p in many.glob("*_facies.tif")}
    for s in scenes[1:3]:
        for p in output_paths(s, many, True):
            p.unlink()
    res2 = map_many(scenes, out_dir=many, scheduler="local", workers=2, confidence=True,
                    progress=False, **kw)
    assert res2.count("done") == 2 and res2.count("skipped") == 2, res2.summary()
    for s in (scenes[0], scenes[3]):
        p = output_paths(s, many, True)[0]
        assert p.stat().st_mtime_ns == stamps[p]
    assert sorted(os.listdir(many)) == sorted([*os.listdir(one), "catalog.json"])


def test_dense_options_do_not_change_the_map(raster):
    """Speed options (fused BN, padding, phase split, pool variants, tiling, legacy) give the
    same probabilities (fp32, <= 1e-5) and classes."""
    from glacierfacies.mapping.inference import DenseOptions

    f, valid, mask, norm = raster
    f, mask, valid = f[:, 30:120, 30:120], mask[30:120, 30:120], valid[30:120, 30:120]
    member = Member(_model(0), temperature=1.3, minimum=norm["min"], maximum=norm["max"])
    ref = dense_predict(member, f, mask, valid, tile_size=64, return_probs=True,
                        options=DenseOptions(fuse_bn=False, balanced_tiles=False))
    for opts in (DenseOptions(), DenseOptions(pad_channels=8, phase_split=True, pool="slices"),
                 DenseOptions(pool="window", balanced_tiles=False, overlap_copies=False)):
        out = dense_predict(member, f, mask, valid, tile_size=40, return_probs=True, options=opts)
        ok = ref.classes != 255
        assert (out.classes == ref.classes).all() and ok.any()
        assert np.nanmax(np.abs(out.probs - ref.probs)) <= 1e-5
        assert np.array_equal(np.isnan(out.confidence), np.isnan(ref.confidence))


@pytest.mark.slow
def test_map_many_killed_midway_then_rerun_maps_only_the_missing(mapped, tmp_path):
    """Kill `glacierfacies map-many` (and its Dask workers) after its first map appears;
    the rerun keeps the finished maps untouched and writes only the missing ones."""
    import os
    import signal
    import subprocess
    import sys
    import time

    d = mapped
    out = tmp_path / "many"
    out.mkdir()
    pattern = str(d["scenes"][0].parent / "S2*.SAFE")
    cmd = [sys.executable, "-c", "from glacierfacies.cli import main; main()", "map-many",
           pattern, "--dem", str(d["dem"]), "--outlines", str(d["outlines"]),
           "--model", str(d["models"][0]), "-o", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while not list(out.glob("*_facies.tif")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p: p.stat().st_mtime_ns for p in out.glob("*_facies.tif")}
    if not first or len(first) == 4:
        pytest.skip(f"the kill did not land midway ({len(first)} of 4 maps written)")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    maps = sorted(out.glob("*_facies.tif"))
    assert len(maps) == 4
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # finished ones skipped
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp leftovers
