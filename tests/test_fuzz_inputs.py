"""Issue 23, item 6: a seeded fuzz test of every input type over the commands.

Each input (a band file, Sentinel-2 MTD_MSIL2A.xml / MTD_TL.xml, a Landsat MTL, DEM,
outlines, labels as GeoPackage and CSV, a model's weights and card, the run configuration,
point tables, the WGMS overview and mbdata, a facies map) is damaged one way per case:
truncated at a random offset, random bytes flipped, emptied, or replaced by a file of
another type. The command that reads it runs in this process (`glacierfacies.cli.main`)
and must end in one of two ways:

- exit 1 with exactly one `error: ...` line that names the damaged file (or the product
  folder it lies in), and no output left behind (nothing that looks complete);
- exit 0 with a correct result: the output exists and reads back whole (a flipped byte in
  pixel data is a different, valid input).

Never a traceback (any other exception fails the case), never another exit status. The
cases come from one seed (`FUZZ_SEED`), so a failure is reproducible by its id. The world
is small (a 160 x 160 px crop of a sample Sentinel-2 scene, a 54 x 54 px Landsat crop), so
the whole test takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

FUZZ_SEED = 23
N_TRUNCATED, N_FLIPPED = 5, 5

#: input key -> commands that read it (argv templates; {key} is the damaged copy's path,
#: the other names are the pristine world's, {out} the case's empty output folder)
COMMANDS: dict[str, list[tuple[str, str]]] = {
    "s2_band": [("features", "features {s2} --dem {dem} --outlines {outlines} -o {out}/f.tif")],
    "s2_mtd": [("features", "features {s2} --dem {dem} --outlines {outlines} -o {out}/f.tif")],
    "s2_tl": [("features", "features {s2} --dem {dem} --outlines {outlines} -o {out}/f.tif")],
    "l8_band": [("features", "features {l8} --dem {dem} --outlines {outlines} -o {out}/f.tif")],
    "l8_mtl": [("features", "features {l8} --dem {dem} --outlines {outlines} -o {out}/f.tif")],
    "dem": [("features", "features {s2} --dem {dem} --outlines {outlines} -o {out}/f.tif"),
            ("products", "products {map} --outlines {outlines} --dem {dem} -o {out}/p.csv")],
    "outlines": [("products", "products {map} --outlines {outlines} --dem {dem} -o {out}/p.csv"),
                 ("run-check", "run {config} --check -o {out}/run")],
    "labels": [("run-check", "run {config} --check -o {out}/run")],
    "labels_csv": [("run-check", "run {config_csv} --check -o {out}/run")],
    "model_pt": [("predict", "predict {points} --model {model} -o {out}/p.csv")],
    "model_card": [("predict", "predict {points} --model {model} -o {out}/p.csv")],
    "config": [("run-check", "run {config} --check -o {out}/run")],
    "points": [("predict", "predict {points} --model {model} -o {out}/p.csv")],
    "points_labelled": [("import-points", "dataset import-points {points_labelled} --folds 2 "
                                          "-o {out}/ds")],
    "wgms_overview": [("run-check", "run {config} --check -o {out}/run")],
    "wgms_mbdata": [("run-check", "run {config} --check -o {out}/run")],
    "map": [("products", "products {map} --outlines {outlines} --dem {dem} -o {out}/p.csv")],
}


def _crop_scene(src: Path, dest: Path, window_10m: tuple[int, int, int]) -> Path:
    """A copy of a sample scene with every band cut to one window (the same ground)."""
    import rasterio
    from rasterio.windows import Window

    shutil.copytree(src, dest)
    r0, c0, n = window_10m
    for f in dest.rglob("*"):
        if f.suffix.lower() not in (".tif", ".tiff"):
            continue
        with rasterio.open(f) as ds:
            k = round(abs(ds.transform.a) / 10)
            win = Window(c0 // k, r0 // k, n // k, n // k)
            prof, data, tr = ds.profile, ds.read(window=win), ds.window_transform(win)
        prof.update(width=n // k, height=n // k, transform=tr)
        with rasterio.open(f, "w", **prof) as out:
            out.write(data)
    return dest


@pytest.fixture(scope="module")
def world(sample_dir, tmp_path_factory) -> dict[str, Path]:
    """The pristine inputs (read-only for the cases) and, per input key, the file to damage
    and the folder a damaged copy must be made of (a scene or WGMS folder, else the file)."""
    import geopandas as gpd
    import pandas as pd
    import rasterio

    from glacierfacies.scenes.reader import find_scenes
    from tests.scenes.test_archives import spectral_model

    w = tmp_path_factory.mktemp("fuzz")
    scenes = find_scenes(sample_dir / "scenes")
    s2_src = next(s for s in scenes if s.name.startswith("S2"))
    l8_src = next(s for s in scenes if s.name.startswith("LC08"))
    p: dict[str, Path] = {"dem": sample_dir / "dem.tif", "outlines": sample_dir / "outlines.gpkg"}
    p["s2"] = _crop_scene(s2_src, w / "scenes" / s2_src.name, (150, 250, 160))
    p["l8"] = _crop_scene(l8_src, w / "scenes" / l8_src.name, (150, 240, 162))
    labels = gpd.read_file(sample_dir / "labels.gpkg")
    labels = labels[labels["scene_id"] == s2_src.name[:-5]].head(200)
    labels.to_file(w / "labels.gpkg")
    csv = pd.DataFrame(labels.drop(columns="geometry"))
    csv["x"], csv["y"], csv["crs"] = labels.geometry.x, labels.geometry.y, labels.crs.to_string()
    csv.to_csv(w / "labels.csv", index=False)
    p["labels"], p["labels_csv"] = w / "labels.gpkg", w / "labels.csv"
    shutil.copytree(sample_dir / "wgms", w / "wgms")
    p["wgms"] = w / "wgms"
    for name, lab in (("config", p["labels"]), ("config_csv", p["labels_csv"])):
        (w / f"{name}.yaml").write_text(
            f"scenes: ['{p['s2']}']\ndem: {p['dem']}\noutlines: {p['outlines']}\n"
            f"labels: {lab}\nwgms: {p['wgms']}\nk_folds: 2\ntile_size: 256\n")
        p[name] = w / f"{name}.yaml"
    p["model"] = spectral_model(w / "model" / "fold0.pt")
    rng = np.random.default_rng(0)
    bands = ["blue", "green", "red", "nir", "swir1", "swir2"]
    table = pd.DataFrame(rng.uniform(0.02, 0.9, (40, 6)).round(4), columns=bands)
    table.to_csv(w / "points.csv", index=False)
    table.insert(0, "class", np.array(["ice", "snow", "debris", "water"] * 10))
    table.insert(1, "glacier", [f"G{i % 4}" for i in range(40)])
    table.to_csv(w / "points_labelled.csv", index=False)
    p["points"], p["points_labelled"] = w / "points.csv", w / "points_labelled.csv"
    with rasterio.open(next(p["s2"].rglob("*_B02_10m.tif"))) as ref:
        prof = {"driver": "GTiff", "width": ref.width, "height": ref.height, "count": 1,
                "dtype": "uint8", "nodata": 255, "crs": ref.crs, "transform": ref.transform}
    classes = (np.add.outer(np.arange(prof["height"]), np.arange(prof["width"])) // 80 % 3)
    with rasterio.open(w / "map_facies.tif", "w", **prof) as dst:
        dst.write(classes.astype(np.uint8), 1)
    p["map"] = w / "map_facies.tif"
    # which file each key damages, and what a damaged copy is made of
    p["targets"] = {
        "s2_band": (next(p["s2"].rglob("*_B03_10m.tif")), p["s2"]),
        "s2_mtd": (p["s2"] / "MTD_MSIL2A.xml", p["s2"]),
        "s2_tl": (next(p["s2"].rglob("MTD_TL.xml")), p["s2"]),
        "l8_band": (next(p["l8"].glob("*_SR_B4.TIF")), p["l8"]),
        "l8_mtl": (next(p["l8"].glob("*_MTL.txt")), p["l8"]),
        "dem": (p["dem"], p["dem"]), "outlines": (p["outlines"], p["outlines"]),
        "labels": (p["labels"], p["labels"]), "labels_csv": (p["labels_csv"], p["labels_csv"]),
        "model_pt": (p["model"], p["model"].parent),
        "model_card": (p["model"].with_suffix(".json"), p["model"].parent),
        "config": (p["config"], p["config"]), "points": (p["points"], p["points"]),
        "points_labelled": (p["points_labelled"], p["points_labelled"]),
        "wgms_overview": (next(p["wgms"].glob("*OVERVIEW*.csv")), p["wgms"]),
        "wgms_mbdata": (sorted((p["wgms"] / "mbdata").glob("*.csv"))[0], p["wgms"]),
        "map": (p["map"], p["map"]),
    }
    p["other_types"] = [p["dem"], p["points"], p["config"], p["model"],
                        p["s2"] / "MTD_MSIL2A.xml", p["outlines"]]
    return p


def _cases() -> list[tuple[str, str, str, int]]:
    """(id, input key, command name, mutation seed) for every case, in a fixed order."""
    out = []
    for key, commands in COMMANDS.items():
        for name, _ in commands:
            kinds = ([f"truncate{i}" for i in range(N_TRUNCATED)]
                     + [f"flip{i}" for i in range(N_FLIPPED)] + ["empty", "wrongtype0",
                                                                   "wrongtype1"])
            for j, kind in enumerate(kinds):
                out.append((f"{key}-{name}-{kind}", key, name, j))
    return out


CASES = _cases()
OUTCOMES: dict[str, int] = {}  # case id -> exit status, filled as the cases run


def _damage(data: bytes, kind: str, rng: np.random.Generator, others: list[bytes]) -> bytes:
    if kind.startswith("truncate"):
        return data[: int(rng.integers(1, max(2, len(data))))]
    if kind.startswith("flip"):
        buf = bytearray(data)
        for pos in rng.integers(0, len(buf), int(rng.integers(1, 9))):
            buf[pos] ^= int(rng.integers(1, 256))
        return bytes(buf)
    if kind == "empty":
        return b""
    # wrong type: another input's bytes (not the same content)
    pool = [o for o in others if o[:64] != data[:64]]
    return pool[int(rng.integers(0, len(pool)))]


def _damaged_copy(world: dict, key: str, kind: str, seed: int, where: Path) -> dict:
    """The world's paths with `key`'s file replaced by a damaged copy under `where`."""
    target, unit = world["targets"][key]
    copy = where / unit.name
    if unit.is_dir():
        shutil.copytree(unit, copy)
        damaged = copy / target.relative_to(unit)
    else:
        shutil.copy(unit, copy)
        damaged = copy
    rng = np.random.default_rng([FUZZ_SEED, seed, sum(map(ord, key))])
    others = [o.read_bytes() for o in world["other_types"] if o.is_file()]
    damaged.write_bytes(_damage(target.read_bytes(), kind, rng, others))
    paths = {k: v for k, v in world.items() if isinstance(v, Path)}
    rename = {"s2_band": "s2", "s2_mtd": "s2", "s2_tl": "s2", "l8_band": "l8", "l8_mtl": "l8",
              "model_pt": "model", "model_card": "model", "wgms_overview": "wgms",
              "wgms_mbdata": "wgms"}
    name = rename.get(key, key)
    if name == "model":
        paths["model"] = copy / world["model"].name
    else:
        paths[name] = copy
    if name == "wgms":  # the configuration that reads it must point at the damaged copy
        text = world["config"].read_text().replace(str(world["wgms"]), str(copy))
        (where / "config.yaml").write_text(text)
        paths["config"] = where / "config.yaml"
    if name in ("outlines", "labels", "labels_csv"):
        base = world["config_csv" if name == "labels_csv" else "config"]
        text = base.read_text().replace(str(world[name]), str(copy))
        (where / "config.yaml").write_text(text)
        paths["config"] = paths["config_csv"] = where / "config.yaml"
    return {"paths": paths, "damaged": damaged, "names": {damaged.name, copy.name}}


def _check_output(command: str, out: Path) -> None:
    """A command that exited 0 wrote a whole, readable result."""
    import pandas as pd
    import rasterio

    if command == "features":
        with rasterio.open(out / "f.tif") as ds:
            assert ds.count == 11 and ds.read(1).shape == (ds.height, ds.width)
    elif command in ("predict", "products"):
        table = pd.read_csv(out / "p.csv")
        assert len(table) > 0
        if command == "products":
            aar = table["aar"].dropna()
            assert ((aar >= 0) & (aar <= 1)).all()
    elif command == "import-points":
        from glacierfacies.data.patchset import PatchSet

        assert len(PatchSet.load(out / "ds").labels) > 0
    elif command == "run-check":
        assert not (out / "run").exists()


@pytest.mark.parametrize("case, key, command, seed", CASES, ids=[c[0] for c in CASES])
def test_damaged_input(case, key, command, seed, world, tmp_path, monkeypatch):
    from glacierfacies.cli import main

    kind = case.rsplit("-", 1)[1]
    damaged = _damaged_copy(world, key, kind, seed, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    template = dict(COMMANDS[key])[command]
    argv = [a.format(out=out, **damaged["paths"]) for a in template.split()]
    monkeypatch.setattr(sys, "argv", ["glacierfacies", *argv])
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main()
        except SystemExit as exc:
            code = exc.code or 0
    lines = [ln for ln in err.getvalue().replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert "Traceback" not in err.getvalue(), err.getvalue()
    OUTCOMES[case] = code
    if code == 0:
        _check_output(command, out)
        return
    assert code == 1, err.getvalue()
    assert len(errors) == 1, lines  # exactly one error line (warnings may precede it)
    assert errors[0] == lines[-1] and "\n" not in errors[0]
    assert any(n in errors[0] for n in damaged["names"]), errors[0]  # names the file
    assert list(out.rglob("*")) == [], "output left behind"


def test_the_fuzz_covers_every_input_type_with_200_cases():
    keys = {c[1] for c in CASES}
    assert len(CASES) >= 200
    if len(OUTCOMES) == len(CASES):  # the whole fuzz ran (in file order): both endings occur
        refused = sum(1 for c in OUTCOMES.values() if c == 1)
        assert 0.3 * len(CASES) < refused < 0.95 * len(CASES), refused
    assert {"s2_band", "l8_band", "s2_mtd", "l8_mtl", "dem", "outlines", "labels", "model_pt",
            "config", "points", "wgms_overview"} <= keys
