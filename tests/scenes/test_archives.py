"""Products as downloaded (issue 12): `.SAFE.zip` and Landsat `.tar` read in place give the
unpacked product's feature stack bit for bit; real JPEG2000 bands; archives without bands."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from glacierfacies.errors import InputError
from glacierfacies.scenes.reader import find_scenes, read_scene, scene_grid, scene_ids
from glacierfacies.stack import build_feature_stack


def spectral_model(path: Path, seed: int = 0) -> Path:
    """A random patch-size-1 model on the six optical bands, saved with its card."""
    from glacierfacies.classes import CLASS_NAMES
    from glacierfacies.features import OPTICAL_BANDS
    from glacierfacies.model.card import ModelCard, save_model
    from glacierfacies.model.network import TwoScaleCNN

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    m = TwoScaleCNN(6, width=6, patch_size=1).eval()
    with torch.no_grad():  # spread the logits so that several classes come out
        for layer in (m.dense1, m.dense2, m.out):
            layer.weight.mul_(5.0)
    card = ModelCard(features=list(OPTICAL_BANDS), classes=list(CLASS_NAMES), patch_size=1,
                     normalisation={"min": [0.0] * 6, "max": [1.0] * 6},
                     architecture=m.kwargs, training={})
    save_model(m, card, path)
    return path


def _sample_scene(sample_dir: Path, prefix: str) -> Path:
    return next(p for p in find_scenes(sample_dir / "scenes") if p.name.startswith(prefix))


def _zip_safe(safe: Path, dest: Path, compression=zipfile.ZIP_DEFLATED) -> Path:
    """Zip a .SAFE as ESA serves it: one top folder NAME.SAFE/ inside NAME.SAFE.zip."""
    with zipfile.ZipFile(dest, "w", compression) as zf:
        for f in sorted(safe.rglob("*")):
            zf.write(f, Path(safe.name) / f.relative_to(safe))
    return dest


def _tar_landsat(folder: Path, dest: Path) -> Path:
    """Tar a Landsat product as USGS serves it: the files flat, no folder."""
    with tarfile.open(dest, "w") as tf:
        for f in sorted(folder.iterdir()):
            tf.add(f, arcname=f.name)
    return dest


def _same_stack(a, b) -> None:
    assert a.features.dtype == b.features.dtype == np.float32
    assert a.features.tobytes() == b.features.tobytes()  # bit for bit, NaN included
    np.testing.assert_array_equal(a.valid, b.valid)
    np.testing.assert_array_equal(a.glacier_index, b.glacier_index)
    assert a.transform == b.transform and a.crs == b.crs
    assert a.scene.scene_id == b.scene.scene_id and a.scene.acquired == b.scene.acquired
    assert (a.scene.sun_azimuth_deg, a.scene.sun_elevation_deg) == (
        b.scene.sun_azimuth_deg, b.scene.sun_elevation_deg)


def test_safe_zip_gives_the_unpacked_stack_bit_for_bit(sample_dir, tmp_path):
    safe = _sample_scene(sample_dir, "S2")
    z = _zip_safe(safe, tmp_path / f"{safe.name}.zip")
    dem, outl = sample_dir / "dem.tif", sample_dir / "outlines.gpkg"
    want = build_feature_stack(read_scene(safe), dem, outl)
    got = build_feature_stack(read_scene(z), dem, outl)
    _same_stack(want, got)
    assert got.scene.metadata["band_files"][0].startswith("/vsizip/")
    assert scene_ids([z]) == scene_ids([safe]) == [want.scene.scene_id]
    assert scene_grid(z) == scene_grid(safe)
    assert find_scenes(tmp_path) == [z]
    # a window of it, as block-wise mapping reads it
    from glacierfacies.scenes.grid import Grid

    g = want.grid
    from rasterio.transform import Affine

    win = Grid(g.crs, g.transform @ Affine.translation(100, 50), 64, 80)
    np.testing.assert_array_equal(read_scene(z, grid=win).reflectance,
                                  read_scene(safe, grid=win).reflectance)


def test_landsat_tar_gives_the_unpacked_stack_bit_for_bit(sample_dir, tmp_path):
    folder = _sample_scene(sample_dir, "LC0")
    t = _tar_landsat(folder, tmp_path / f"{folder.name}.tar")
    dem, outl = sample_dir / "dem.tif", sample_dir / "outlines.gpkg"
    want = build_feature_stack(read_scene(folder), dem, outl)
    got = build_feature_stack(read_scene(t), dem, outl)
    _same_stack(want, got)
    assert got.scene.metadata["band_files"][0].startswith("/vsitar/")
    assert scene_ids([t]) == scene_ids([folder])
    assert scene_grid(t) == scene_grid(folder)
    assert find_scenes(tmp_path) == [t]
    # gzipped too (GDAL decompresses it; slower, same values)
    tgz = tmp_path / "gz" / f"{folder.name}.tar.gz"
    tgz.parent.mkdir()
    with tarfile.open(tgz, "w:gz") as tf:
        for f in sorted(folder.iterdir()):
            tf.add(f, arcname=f.name)
    assert read_scene(tgz).reflectance.tobytes() == want.scene.reflectance.tobytes()


def _has_jp2_driver() -> bool:
    from rasterio.drivers import raster_driver_extensions

    return "JP2OpenJPEG" in raster_driver_extensions().values()


@pytest.mark.skipif(not _has_jp2_driver(),
                    reason=f"GDAL {rasterio.__gdal_version__} has no JP2OpenJPEG driver")
def test_real_jpeg2000_bands_read_as_their_geotiffs(sample_dir, tmp_path):
    """The SAFE's bands re-encoded as real JPEG2000 (OpenJPEG, lossless) read to the same
    reflectance, unpacked and zipped."""
    src = _sample_scene(sample_dir, "S2")
    safe = tmp_path / "jp2" / src.name
    shutil.copytree(src, safe)
    n = 0
    for tif in sorted(safe.rglob("IMG_DATA/*/*.tif")):
        with rasterio.open(tif) as r:
            prof, data = r.profile, r.read()
        jp2 = tif.with_suffix(".jp2")
        with rasterio.open(jp2, "w", driver="JP2OpenJPEG", width=prof["width"],
                           height=prof["height"], count=1, dtype=prof["dtype"], crs=prof["crs"],
                           transform=prof["transform"], nodata=prof["nodata"], QUALITY=100,
                           REVERSIBLE="YES") as dst:
            dst.write(data)
        with rasterio.open(jp2) as r:
            assert r.driver == "JP2OpenJPEG" and r.crs == prof["crs"]
            assert r.transform == prof["transform"]
        tif.unlink()
        n += 1
    assert n == 6 and not list(safe.rglob("IMG_DATA/*/*.tif"))
    assert jp2.read_bytes()[4:8] == b"jP  "  # a JP2 signature box, not GeoTIFF bytes
    want = read_scene(src)
    got = read_scene(safe)
    assert got.metadata["band_files"][0].endswith(".jp2")
    assert got.reflectance.tobytes() == want.reflectance.tobytes()
    z = _zip_safe(safe, tmp_path / f"{safe.name}.zip", zipfile.ZIP_STORED)
    assert read_scene(z).reflectance.tobytes() == want.reflectance.tobytes()


# ------------------------------------------------------------------ bad archives

def _bad_archives(tmp_path: Path, sample_dir: Path) -> list[tuple[Path, str]]:
    safe = _sample_scene(sample_dir, "S2")
    landsat = _sample_scene(sample_dir, "LC0")
    no_bands = tmp_path / "S2B_MSIL2A_20220905T103629_N0509_R108_T32TPS_20220905T135612.SAFE.zip"
    with zipfile.ZipFile(no_bands, "w") as zf:
        zf.write(safe / "MTD_MSIL2A.xml", f"{safe.name}/MTD_MSIL2A.xml")
    mtl_only = tmp_path / f"{landsat.name}.tar"
    with tarfile.open(mtl_only, "w") as tf:
        mtl = next(landsat.glob("*_MTL.txt"))
        tf.add(mtl, arcname=mtl.name)
    no_mtl = tmp_path / "nomtl" / "LC09_bands.tar"
    no_mtl.parent.mkdir()
    with tarfile.open(no_mtl, "w") as tf:
        for f in landsat.glob("*_SR_B*.TIF"):
            tf.add(f, arcname=f.name)
    corrupt = tmp_path / "corrupt" / "S2A_MSIL2A_X.SAFE.zip"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    no_meta = tmp_path / "nometa" / "S2A_MSIL2A_20190101T000000_X.SAFE.zip"
    no_meta.parent.mkdir()
    with zipfile.ZipFile(no_meta, "w") as zf:
        for f in safe.rglob("*.tif"):
            zf.write(f, Path("X.SAFE") / f.relative_to(safe))
    return [
        (no_bands, r"\.SAFE\.zip/GRANULE/\*/IMG_DATA: missing band file\(s\) B02, B03"),
        (mtl_only, r"\.tar/LC0\w+_SR_B2\.TIF: missing band file"),
        (no_mtl, r"LC09_bands\.tar: archive holds no Landsat _MTL"),
        (corrupt, r"S2A_MSIL2A_X\.SAFE\.zip: cannot read archive"),
        (no_meta, r"\.SAFE\.zip/MTD_MSIL2A\.xml: Sentinel-2 product metadata not found"),
    ]


def test_archives_without_bands_one_line_nothing_written(sample_dir, tmp_path):
    from glacierfacies.cli import cli

    (tmp_path / "in").mkdir()
    cases = _bad_archives(tmp_path / "in", sample_dir)
    assert len(cases) == 5
    model = spectral_model(tmp_path / "m" / "fold0.pt")
    for path, match in cases:
        with pytest.raises(InputError, match=match) as err:
            read_scene(path)
        assert "\n" not in str(err.value)
        out = tmp_path / "out" / path.name
        out.mkdir(parents=True)
        res = CliRunner().invoke(cli, ["map", str(path), "--dem", str(sample_dir / "dem.tif"),
                                       "--outlines", str(sample_dir / "outlines.gpkg"),
                                       "--model", str(model), "-o", str(out / "m.tif")])
        assert res.exit_code != 0 and isinstance(res.exception, InputError), res.output
        assert "\n" not in str(res.exception)
        assert list(out.iterdir()) == [], path.name
