"""Every writing command refuses to replace an existing output without --overwrite.

The refusal is one line naming the file, exit status 1, and nothing written (the existing
output is byte-identical, its folder holds no new file); with --overwrite the command
succeeds. Inputs are tiny: a 1x1-patch model trained for one epoch, a 40x40 facies map.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from glacierfacies.classes import NODATA_CLASS, class_index

CRS = "EPSG:32632"
X0, Y0 = 600000.0, 5200000.0


def _main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`glacierfacies ARGS` in-process through `main()`: (exit status, stdout, stderr)."""
    from glacierfacies.cli import main

    monkeypatch.setattr(sys, "argv", ["glacierfacies", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _snapshot(path: Path) -> dict:
    """Bytes and mtimes of a file or of every file under a folder, plus its folder's names."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {"parent": sorted(p.name for p in path.parent.iterdir()),
            "files": {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}}


def _refused_then_replaced(monkeypatch, capsys, args: list, output: Path,
                           protected: list[Path] | None = None) -> str:
    """Run ARGS (whose first output exists) without, then with --overwrite."""
    protected = protected or [output]
    assert output.exists()
    before = [_snapshot(p) for p in protected]
    code, _, err = _main(monkeypatch, capsys, *args)
    assert code == 1
    assert err == f"error: {output}: output exists; pass --overwrite to replace it\n"
    assert [_snapshot(p) for p in protected] == before
    code, out, err = _main(monkeypatch, capsys, *args, "--overwrite")
    assert code == 0, err
    assert output.exists()
    return out


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A round-1 training run (6 folds, 1 epoch, 1x1 patches of blue/green/red)."""
    from glacierfacies.training.config import TrainConfig
    from glacierfacies.training.protocol import train_dataset
    from tests.training.test_protocol import synthetic_patchset

    tmp = tmp_path_factory.mktemp("overwrite_run")
    ps, _ = synthetic_patchset(n=240, s=1, flip=0.0)
    ps.save(tmp / "ds")
    cfg = TrainConfig.sample(epochs=1, width=2, batch_size=64, checkpoint_every=0, threads=1,
                             seed=0)
    train_dataset(tmp / "ds", tmp / "run", cfg, "round1", progress=False)
    assert (tmp / "run" / "metrics.json").is_file()  # `train` writes it: evaluate replaces it
    return tmp / "run"


@pytest.fixture(scope="module")
def facies_map(tmp_path_factory) -> dict[str, Path]:
    """A 40x40 facies map (snow above ice) and one box glacier over it."""
    tmp = tmp_path_factory.mktemp("overwrite_map")
    cmap = np.full((40, 40), class_index("ice"), np.uint8)
    cmap[:15] = class_index("snow")
    cmap[:, :2] = NODATA_CLASS
    profile = dict(driver="GTiff", height=40, width=40, count=1, dtype="uint8", crs=CRS,
                   transform=from_origin(X0, Y0, 10.0, 10.0), nodata=NODATA_CLASS)
    path = tmp / "S2B_MSIL2A_20210828T103629_facies.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(cmap, 1)
        dst.update_tags(SCENE_ID="S2B_MSIL2A_20210828T103629", SENSOR="S2B",
                        ACQUIRED="2021-08-28 10:36:29+00:00")
    gpd.GeoDataFrame({"glacier": ["Alpha"]}, geometry=[box(X0 + 50, Y0 - 350, X0 + 350, Y0 - 50)],
                     crs=CRS).to_file(tmp / "outlines.gpkg")
    return {"map": path, "outlines": tmp / "outlines.gpkg"}


# ---------------------------------------------------------------- the commands


def test_products(facies_map, tmp_path, monkeypatch, capsys):
    out = tmp_path / "products.gpkg"
    args = ["products", facies_map["map"], "--outlines", facies_map["outlines"], "-o", out,
            "--shadow", "exclude"]
    assert _main(monkeypatch, capsys, *args)[0] == 0
    sidecar = tmp_path / "products.gpkg.json"
    assert sidecar.is_file()
    printed = _refused_then_replaced(monkeypatch, capsys, args, out, [out, sidecar])
    assert "1 glacier-scene rows" in printed
    # a stale sidecar alone is refused too, naming it
    out.unlink()
    code, _, err = _main(monkeypatch, capsys, *args)
    assert code == 1 and err == f"error: {sidecar}: output exists; pass --overwrite to replace it\n"
    assert not out.exists()


def test_massbalance(tmp_path, monkeypatch, capsys):
    from tests.products.test_table import _products_table
    from tests.products.test_wgms import write_fog

    table, fog = _products_table()
    table.to_csv(tmp_path / "products.csv", index=False)
    write_fog(tmp_path / "fog", fog)
    out = tmp_path / "mb"
    args = ["massbalance", tmp_path / "products.csv", "--wgms", tmp_path / "fog", "-o", out,
            "--hemisphere", "north", "--bootstrap", "50"]
    assert _main(monkeypatch, capsys, *args)[0] == 0
    (out / "notes.txt").write_text("mine")  # the whole folder is the output
    _refused_then_replaced(monkeypatch, capsys, args, out)
    assert (out / "stats.json").is_file() and not (out / "notes.txt").exists()


def test_evaluate(run_dir, tmp_path, monkeypatch, capsys):
    metrics = run_dir / "metrics.json"
    # RUN_DIR/metrics.json exists once `train` ran: refused, the run folder untouched
    printed = _refused_then_replaced(monkeypatch, capsys, ["evaluate", run_dir], metrics,
                                     [run_dir])
    assert printed.startswith(f"{metrics} written\n") and "macro F1 (round 1)" in printed
    # -o writes the metrics elsewhere without the flag, and is then protected in turn
    other = tmp_path / "metrics_again.json"
    code, printed, err = _main(monkeypatch, capsys, "evaluate", run_dir, "-o", other)
    assert code == 0, err
    assert printed.startswith(f"{other} written\n")
    before = _snapshot(other)
    code, _, err = _main(monkeypatch, capsys, "evaluate", run_dir, "-o", other)
    assert (code, err) == (1, f"error: {other}: output exists; pass --overwrite to replace it\n")
    assert _snapshot(other) == before


def test_export_onnx(run_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx")
    out = tmp_path / "fold0.onnx"
    args = ["export-onnx", run_dir / "round1" / "models" / "fold0.pt", "-o", out]
    assert _main(monkeypatch, capsys, *args)[0] == 0
    _refused_then_replaced(monkeypatch, capsys, args, out)


def test_map(run_dir, sample_dir, tmp_path, monkeypatch, capsys):
    from glacierfacies.scenes.reader import find_scenes

    scene = [s for s in find_scenes(sample_dir / "scenes") if s.name.startswith("S2")][0]
    out = tmp_path / "facies.tif"
    args = ["map", scene, "--dem", sample_dir / "dem.tif", "--outlines",
            sample_dir / "outlines.gpkg", "--model", run_dir / "round1" / "models" / "fold0.pt",
            "-o", out, "--tile-size", 4096]
    code, _, err = _main(monkeypatch, capsys, *args)
    assert code == 0, err
    _refused_then_replaced(monkeypatch, capsys, args, out, [out, out.with_suffix(".qml")])


def test_features(sample_dir, tmp_path, monkeypatch, capsys):
    from glacierfacies.scenes.reader import find_scenes

    scene = [s for s in find_scenes(sample_dir / "scenes") if s.name.startswith("S2")][0]
    out = tmp_path / "stack.tif"
    args = ["features", scene, "--dem", sample_dir / "dem.tif", "--outlines",
            sample_dir / "outlines.gpkg", "-o", out]
    code, _, err = _main(monkeypatch, capsys, *args)
    assert code == 0, err
    _refused_then_replaced(monkeypatch, capsys, args, out)


@pytest.mark.parametrize("command", [
    "sample OUT", "dataset build --scenes IN --dem IN --outlines IN --labels IN.csv -o OUT",
    "dataset import-published IN -o OUT", "dataset export-published IN -o OUT",
    "dataset import-points IN.csv -o OUT"])
def test_folder_writers_refuse_before_reading_their_inputs(command, tmp_path, monkeypatch,
                                                          capsys):
    """The inputs are placeholders: the refusal comes before any of them is read."""
    (tmp_path / "IN").mkdir()
    (tmp_path / "IN.csv").write_text("not a table\n")
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "kept.txt").write_text("mine")
    args = [str(tmp_path / a) if a.isupper() or a == "IN.csv" else a for a in command.split()]
    before = _snapshot(out)
    code, _, err = _main(monkeypatch, capsys, *args)
    assert (code, err) == (1, f"error: {out}: output exists; pass --overwrite to replace it\n")
    assert _snapshot(out) == before


def test_every_glacierfacies_error_is_one_line(tmp_path, monkeypatch, capsys):
    """Not only InputError: a RunStateError (not a ValueError) is one line and exit 1 too."""
    from glacierfacies.errors import RunStateError
    from glacierfacies.workflow import pipeline

    def refuse(config, out, log):
        raise RunStateError(out, "holds another run")

    monkeypatch.setattr(pipeline, "run_pipeline", refuse)
    code, _, err = _main(monkeypatch, capsys, "run", "-o", tmp_path / "r")
    assert (code, err) == (1, f"error: {tmp_path / 'r'}: holds another run\n")


# ---------------------------------------------------------------- --help


WRITING = {"sample", "features", "dataset build", "dataset import-published",
           "dataset export-published", "dataset import-points", "map", "map-many", "products",
           "massbalance", "evaluate", "export-onnx", "export-targets", "predict",
           "models build", "models import-reference"}
RESUMING = {"train", "run"}  # a rerun continues the folder; another configuration is refused
READING = {"dataset info"}


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), cmd


def test_help_of_every_command_and_overwrite_on_every_writer():
    from click.testing import CliRunner

    from glacierfacies.cli import cli

    commands = dict(_commands(cli))
    assert set(commands) == WRITING | RESUMING | READING  # a new command must be classed here
    runner = CliRunner()
    for name, cmd in commands.items():
        res = runner.invoke(cli, [*name.split(), "--help"])
        assert res.exit_code == 0, (name, res.output)
        has = any("--overwrite" in p.opts for p in cmd.params)
        assert has == (name in WRITING), name
        if has:
            assert "--overwrite" in res.output, name
    for group in ("", "dataset"):
        assert runner.invoke(cli, [*group.split(), "--help"]).exit_code == 0
