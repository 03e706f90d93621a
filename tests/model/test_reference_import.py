"""`models import-reference` (issue 19): the round trip from the authors' .h5 files to cards
that `--model DIR` loads as an ensemble, and one-line errors with nothing written for the
bad inputs the issue lists (not HDF5, another feature set, bad min-max pickles, terrain
models on a point table)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli.test_overwrite import _main  # `glacierfacies ARGS` in-process via main()

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "data" / "reference"
WEIGHTS = REFERENCE / "weights"
ABERLE = REPO.parent / "shared" / "data" / "aberle"
pytestmark = pytest.mark.skipif(not (WEIGHTS / "1").is_dir(),
                                reason=f"reference weights absent ({WEIGHTS})")


def _one_line_error(code: int, err: str, *names: str) -> None:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in names:
        assert n in lines[0], (n, err)


def _set1_copy(tmp_path: Path, folds=(0, 1)) -> Path:
    """A folder of two fold files of feature set 1 (import is per folder, the files in place)."""
    d = tmp_path / "weights1"
    d.mkdir()
    for k in folds:
        name = f"{k}_cnn_afterconfidentlearning_weights.h5"
        shutil.copy(WEIGHTS / "1" / name, d / name)
    return d


def test_import_round_trip_gives_the_authors_network(tmp_path, monkeypatch, capsys):
    from glacierfacies.model.card import load_members
    from glacierfacies.model.reference_h5 import file_sha256, reference_from_h5

    out = tmp_path / "ref1"
    code, stdout, err = _main(monkeypatch, capsys, "models", "import-reference", REFERENCE,
                              "-o", out, "--feature-set", "1")
    assert code == 0, err
    assert "6 fold models of feature set 1" in stdout
    ens = json.loads((out / "model.json").read_text())
    assert ens["members"] == [f"fold{k}.json" for k in range(6)]
    assert ens["features"] == ["blue", "green", "red", "nir", "swir1", "swir2"]
    assert ens["classes"] == ["ice", "snow", "debris", "firn", "shadow", "refrozen-like",
                              "water", "cloud"]
    assert ens["normalisation"]["method"] == "recovered"
    assert ens["licence"].startswith("GPL-2.0")
    card = json.loads((out / "fold3.json").read_text())
    h5 = WEIGHTS / "1" / "3_cnn_afterconfidentlearning_weights.h5"
    assert card["patch_size"] == 33
    assert card["weights"]["path"] == str(h5.resolve())
    assert card["weights"]["sha256"] == file_sha256(h5)
    assert card["architecture"]["type"] == "reference"
    assert not list(out.glob("*.h5"))  # the weights are read where they lie, never copied
    # recovered optical maxima (docs/models.md): min 0, max = k m / mu, all > 0.5
    assert card["normalisation"]["min"] == [0.0] * 6
    assert all(0.5 < v < 4 for v in card["normalisation"]["max"])

    members = load_members([out])  # a folder is the ensemble of its fold cards
    assert len(members) == 6
    x = torch.rand(3, 6, 33, 33, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = members[3].model(x)
        theirs = reference_from_h5(h5).eval()(x)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_minmax_pickle_is_used_and_recorded(tmp_path, monkeypatch, capsys):
    src = _set1_copy(tmp_path)
    pk = tmp_path / "globalminmax.pickle"
    lo, hi = np.zeros(6), np.arange(1, 7, dtype=float)
    pk.write_bytes(pickle.dumps((lo, hi)))
    out = tmp_path / "ref"
    code, _, err = _main(monkeypatch, capsys, "models", "import-reference", src, "-o", out,
                         "--minmax", pk)
    assert code == 0, err
    norm = json.loads((out / "fold0.json").read_text())["normalisation"]
    assert norm["min"] == lo.tolist() and norm["max"] == hi.tolist()
    assert norm["method"] == "authors' file"


def _bad_pickles(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    short = tmp_path / "short.pickle"
    short.write_bytes(pickle.dumps((np.zeros(5), np.ones(5))))
    flat = tmp_path / "flat.pickle"
    hi = np.ones(6)
    hi[2] = 0.0
    flat.write_bytes(pickle.dumps({"min": np.zeros(6), "max": hi}))
    code = tmp_path / "code.pickle"  # a pickle that would run code: refused, not run
    code.write_bytes(pickle.dumps(print))
    return {"length": (short, "the model takes 6 features"),
            "max<=min": (flat, "max <= min for feature(s) 2"),
            "code": (code, "cannot read the min-max pickle")}


@pytest.mark.parametrize("case", ["not-hdf5", "other-set", "length", "max<=min", "code"])
def test_bad_inputs_are_one_line_and_write_nothing(case, tmp_path, monkeypatch, capsys):
    src = _set1_copy(tmp_path)
    args = ["models", "import-reference", src, "-o", tmp_path / "out"]
    if case == "not-hdf5":
        bad = src / "1_cnn_afterconfidentlearning_weights.h5"
        bad.write_text("not an HDF5 file\n")
        names = [str(bad)]
    elif case == "other-set":
        args += ["--feature-set", "4"]
        names = ["weights of feature set 1", "--feature-set 4"]
    else:
        pk, msg = _bad_pickles(tmp_path)[case]
        args += ["--minmax", pk]
        names = [str(pk), msg]
    code, _, err = _main(monkeypatch, capsys, *args)
    _one_line_error(code, err, *names)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))  # no temporary left either


@pytest.mark.skipif(not (ABERLE / "Sentinel-2_SR_training_data.csv").is_file(),
                    reason="Aberle points absent")
def test_terrain_models_on_a_point_table_are_refused(tmp_path, monkeypatch, capsys):
    four = tmp_path / "w4"
    four.mkdir()
    for k in (0,):
        name = f"{k}_cnn_afterconfidentlearning_weights.h5"
        shutil.copy(WEIGHTS / "4" / name, four / name)
    code, _, err = _main(monkeypatch, capsys, "models", "import-reference", four, "-o",
                         tmp_path / "ref4")
    assert code == 0, err
    table = tmp_path / "points.csv"
    lines = (ABERLE / "Sentinel-2_SR_training_data.csv").read_text().splitlines()[:21]
    table.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pred.csv"
    code, _, err = _main(monkeypatch, capsys, "predict", table, "--model", tmp_path / "ref4",
                         "--bands", "sentinel2", "-o", out)
    _one_line_error(code, err, str(table), "feature set 1", "33 x 33 terrain patch")
    assert not out.exists()


def test_dense_mode_is_recorded_and_runs_the_valid_pass(tmp_path, monkeypatch, capsys):
    """--mode dense: the cards say so, the loaded network runs `approx_logits`, which is a
    valid (translation-equivariant) pass: shifting the raster shifts its logits."""
    from glacierfacies.model.card import load_members

    src = _set1_copy(tmp_path, folds=(0,))
    out = tmp_path / "dense"
    code, stdout, err = _main(monkeypatch, capsys, "models", "import-reference", src, "-o", out,
                              "--mode", "dense")
    assert code == 0, err
    assert "dense network" in stdout
    assert json.loads((out / "fold0.json").read_text())["architecture"]["mode"] == "dense"
    (member,) = load_members([out])
    net = member.model
    assert net.mode == "dense"
    x = torch.rand(1, 6, 120, 110, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = net.dense_logits(x)
        assert torch.equal(a, net.approx_logits(x))
        b = net.dense_logits(x[:, :, 6:, 9:])  # the same raster moved by (6, 9) pixels
    assert a.shape == (1, 8, 88, 78) and b.shape == (1, 8, 82, 69)
    # away from the raster's edge (its zero padding reaches 12 px in, 58 px down / right)
    core_a, core_b = a[..., 18:30, 21:40], b[..., 12:24, 12:31]
    assert torch.allclose(core_a, core_b, atol=1e-4)
    # with a mask, blocks (here of 16 outputs) with their 12 px margins give the same values
    where = torch.rand(1, 88, 78, generator=torch.Generator().manual_seed(2)) < 0.05
    with torch.no_grad():
        blocked = net.dense_logits(x, where=where, strip_rows=16)
    m = where[0]
    assert torch.allclose(blocked[0][:, m], a[0][:, m], atol=1e-5)
