"""Training: loss, weights, augmentation, folds (leakage guard), the protocol, resumption."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from glacierfacies.classes import CLASS_NAMES
from glacierfacies.data.patchset import PatchSet
from glacierfacies.errors import InputError, ModelMismatchError, RunStateError
from glacierfacies.model.card import load_model
from glacierfacies.training import cleaning as cleaning
from glacierfacies.training.calibration import tempered_softmax as _softmax
from glacierfacies.training.config import TrainConfig
from glacierfacies.training.loop import augment_batch, epoch_order, focal_loss, sample_weights
from glacierfacies.training.protocol import fold_splits, run_protocol

torch.set_num_threads(1)  # tiny models: one thread is several times faster on a busy box
FEATS = ("blue", "green", "red")


def synthetic_patchset(n: int = 420, s: int = 27, k: int = 6, seed: int = 0,
                       classes=(0, 1, 2, 4), flip: float = 0.08, n_glaciers: int = 12
                       ) -> tuple[PatchSet, np.ndarray]:
    """Easy, separable patches (class = mean spectrum + noise), glacier-disjoint folds.

    Returns the set and the mask of deliberately flipped labels.
    """
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, n)
    centres = np.array([[0, 0, 1], [1, 1, 1], [0.2, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0],
                        [0, 1, 1], [1, 0, 1]]) * 0.6 + 0.2
    x = rng.normal(0.0, 0.1, (n, len(FEATS), s, s)).astype(np.float32)
    x += centres[y][:, :, None, None].astype(np.float32)
    glacier = rng.integers(0, n_glaciers, n)
    given = y.copy()
    flipped = (rng.random(n) < flip) & np.isin(y, (0, 1, 2))
    given[flipped] = (y[flipped] + 1) % 3
    table = pd.DataFrame({
        "class": [CLASS_NAMES[c] for c in given], "glacier": [f"G{g}" for g in glacier],
        "scene_id": [f"S{g}_{i % 2}" for i, g in enumerate(glacier)], "date": "2020-08-01",
        "sensor": "S2", "region": "alps", "fold": glacier % k,
        "x": rng.uniform(0, 1e4, n), "y": rng.uniform(0, 1e4, n), "crs": "EPSG:32632",
        "point_id": [f"p{i}" for i in range(n)],
    })
    ps = PatchSet(x, given, table, FEATS, CLASS_NAMES, s, None, {}, {"k": k})
    return ps, flipped


CFG = TrainConfig.sample(epochs=4, width=4, batch_size=16, lr=3e-3, checkpoint_every=3, seed=3,
                         threads=1)


# ---------------------------------------------------------------- pieces


def test_focal_loss_values():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    target = torch.tensor([0, 2])
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(focal_loss(logits, target, gamma=0.0, smoothing=0.0), ce)
    p = logits.softmax(1)
    q = torch.full((2, 3), 0.1 / 3)
    q[0, 0] += 0.9
    q[1, 2] += 0.9
    manual = -(q * (1 - p) ** 2 * p.log()).sum(1)
    w = torch.tensor([2.0, 0.5])
    assert torch.allclose(focal_loss(logits, target, 2.0, 0.1, w), (manual * w).mean())
    # focusing: a confident correct sample costs less than with cross entropy
    assert focal_loss(logits[:1], target[:1], 2.0, 0.0) < 0.1 * ce


def test_sample_weights_balance_classes_and_scenes():
    labels = np.array([0, 0, 0, 1])
    scenes = np.array(["a", "a", "b", "b"])
    w = sample_weights(labels, scenes)
    # class weights 4/(2*3), 4/(2*1); scene weights 1, 1 -> normalised to mean 1
    raw = np.array([2 / 3, 2 / 3, 2 / 3, 2.0])
    assert np.allclose(w, raw / raw.mean())
    assert np.isclose(w[labels == 0].sum(), w[labels == 1].sum())


def test_augmentation_is_dihedral_and_bounded():
    torch.manual_seed(0)
    x = torch.rand(64, 2, 5, 5)
    y = augment_batch(x, contrast=0.0, brightness=0.0)
    for i in range(64):
        cands = []
        for t in (x[i], x[i].transpose(-1, -2)):
            for k in range(4):
                cands.append(torch.rot90(t, k, (-2, -1)))
        assert any(torch.allclose(y[i], c, atol=1e-6) for c in cands)
        assert torch.allclose(y[i, :, 2, 2], x[i, :, 2, 2], atol=1e-6)  # the labelled centre stays put
    z = augment_batch(x, contrast=0.05, brightness=0.01)
    m = x.mean(dim=(-2, -1), keepdim=True)
    # per sample: z = (T(x) - m) * c + m + b with |c - 1| <= 0.05, |b| <= 0.01
    assert ((z.mean(dim=(-2, -1), keepdim=True) - m).abs() <= 0.01 + 1e-6).all()
    spread = (z.amax(dim=(-2, -1)) - z.amin(dim=(-2, -1))) / (x.amax(dim=(-2, -1)) - x.amin(dim=(-2, -1)))
    assert (spread >= 0.95 - 1e-5).all() and (spread <= 1.05 + 1e-5).all()


def test_epoch_order_is_pure():
    assert np.array_equal(epoch_order(1, 2, 3, 4, 50), epoch_order(1, 2, 3, 4, 50))
    assert not np.array_equal(epoch_order(1, 2, 3, 4, 50), epoch_order(1, 2, 3, 5, 50))


def test_folds_leakage_guard():
    """No glacier in both training and test (or validation) of any fold; val = t - 1."""
    ps, _ = synthetic_patchset(n=300)
    glaciers = ps.table["glacier"].to_numpy()
    folds = ps.table["fold"].to_numpy()
    keep = np.random.default_rng(0).random(300) > 0.2
    for t, train, val, test in fold_splits(ps, keep):
        assert set(glaciers[train]).isdisjoint(glaciers[test])
        assert set(glaciers[val]).isdisjoint(glaciers[test])
        assert set(glaciers[train]).isdisjoint(glaciers[val])
        assert (folds[val] == (t - 1) % 6).all() and (folds[test] == t).all()
        assert keep[train].all() and keep[val].all() and len(test) == (folds == t).sum()
        assert len(train) + len(val) == (keep & (folds != t)).sum()
    bad = ps.subset(np.arange(300))
    bad.table.loc[bad.table["glacier"] == "G0", "fold"] = np.arange((glaciers == "G0").sum()) % 6
    with pytest.raises(InputError, match="glacier G0 lies in folds"):
        fold_splits(bad)


def test_config_roundtrip_and_validation():
    cfg = TrainConfig.sample(features=["red", "nir"], seed=5)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig.paper().width == 64 and TrainConfig.paper().epochs == 100
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=1)
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({"epoch": 3})


# ---------------------------------------------------------------- the protocol


@pytest.fixture(scope="module")
def protocol_run(tmp_path_factory):
    """One full protocol run on synthetic data, recording what cleaning was given."""
    ps, flipped = synthetic_patchset()
    run_dir = tmp_path_factory.mktemp("run") / "run"
    calls = []
    original = cleaning.find_noisy_labels

    def spy(labels, probs, prune_classes, *a, **kw):
        calls.append((np.array(labels), np.array(probs), list(prune_classes)))
        return original(labels, probs, prune_classes, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cleaning, "find_noisy_labels", spy)
        metrics = run_protocol(ps, run_dir, CFG, progress=False,
                               flipped=pd.DataFrame({"point_id": ps.table["point_id"][flipped]}))
    return ps, flipped, run_dir, metrics, calls


def test_protocol_outputs_and_scores(protocol_run):
    ps, flipped, run_dir, metrics, _ = protocol_run
    assert metrics["macro_f1_cleaned"] >= 0.9
    assert metrics["macro_f1_unpruned"] <= metrics["macro_f1_cleaned"] + 1e-9
    assert metrics["cleaning"]["n_flagged"] > 0
    assert metrics["cleaning"]["flipped_facies_flagged_recall"] >= 0.5
    assert json.loads((run_dir / "metrics.json").read_text())["macro_f1_cleaned"] == \
        metrics["macro_f1_cleaned"]
    assert TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())) == CFG
    for name in ("figure_data.json", "cleaning/label_review.gpkg", "cleaning/label_review.csv"):
        assert (run_dir / name).stat().st_size > 0, name
    # numbers only: the figures are drawn from figure_data.json by workflow.figures
    assert not list(run_dir.glob("*.png"))
    fig = json.loads((run_dir / "figure_data.json").read_text())
    for name in ("cleaned", "unpruned"):
        assert fig["confusion"][name]["counts"] == metrics[name]["confusion"]["counts"]
    assert {p["key"]: p["ece"] for p in fig["reliability"]["panels"]} == \
        metrics["calibration"]["diagram_eces"]
    # every fold of both rounds and the cleaning step ran as a stage, with a marker
    markers = sorted(p.stem for p in (run_dir / "stages").glob("*.json"))
    assert markers == sorted(["clean"] + [f"round{r}_fold{t}" for r in (1, 2) for t in range(6)])
    marker = json.loads((run_dir / "stages" / "round2_fold3.json").read_text())
    assert {f["path"] for f in marker["files"]} == {
        "models/fold3.pt", "models/fold3.json", "round2/predictions/fold3.npz"}
    # classes water, cloud, ... never appear: reported, not a crash
    assert any("without reference labels" in w for w in metrics["warnings"])
    cal = metrics["calibration"]
    assert len(cal["temperatures"]) == 6 and all(t > 0 for t in cal["temperatures"])
    assert cal["ece_after"] <= cal["ece_before"] + 0.05
    assert 0.0 <= cal["ece_after_unpruned"] <= 1.0 and len(cal["folds"]) == 6
    for fold in cal["folds"]:  # kept only where it lowered the validation-fold ECE
        assert fold["method"] == "none" or fold["val_ece_after"] < fold["val_ece_before"]


def test_model_files_and_cards(protocol_run):
    ps, _, run_dir, _, _ = protocol_run
    model, card = load_model(run_dir / "models" / "fold2.pt")
    assert card.features == list(FEATS) and card.classes == list(CLASS_NAMES)
    assert card.patch_size == 27 and card.architecture["width"] == 4
    assert card.fold["test_fold"] == 2 and card.fold["validation_fold"] == 1
    assert card.fold["train_folds"] == [0, 3, 4, 5]
    # temperature where it lowered the validation ECE, else identity with the reason
    assert card.calibration["method"] in ("temperature", "none") and card.temperature > 0
    assert card.calibration["method"] == "temperature" or "reason" in card.calibration
    assert 0.0 <= card.metrics["best_val_mean_iou"] <= 1.0
    assert len(card.normalisation["min"]) == 3
    # the card's normalisation is the training folds' min/max
    train = np.isin(ps.table["fold"], card.fold["train_folds"])
    keep = ~np.load(run_dir / "cleaning" / "flagged.npy")
    assert np.allclose(card.normalisation["min"], ps.patches[train & keep].min(axis=(0, 2, 3)))
    # the stored test logits are this model's
    with np.load(run_dir / "round2" / "predictions" / "fold2.npz") as z:
        idx, logits = z["test_idx"], z["test_logits"]
    lo = np.array(card.normalisation["min"])[None, :, None, None]
    span = (np.array(card.normalisation["max"]) - card.normalisation["min"])[None, :, None, None]
    with torch.no_grad():
        again = model(torch.from_numpy(((ps.patches[idx] - lo) / span).astype(np.float32)))
    assert np.abs(again.numpy() - logits).max() < 1e-4
    card.check_features(FEATS)
    with pytest.raises(ModelMismatchError, match="model expects features blue,green,red") as e:
        card.check_features(("blue", "green", "nir"))
    assert "\n" not in str(e.value) and "fold2.json" in str(e.value)


def test_cleaning_used_only_out_of_fold_probabilities(protocol_run):
    """Each point's probabilities given to cleaning come from the round-1 model that had
    that point's fold as its test fold (never trained or validated on it)."""
    ps, _, run_dir, _, calls = protocol_run
    assert len(calls) == 1
    labels, probs, prune = calls[0]
    assert prune == ["ice", "snow", "debris", "firn", "refrozen-like"]
    assert np.array_equal(labels, ps.labels)
    folds = ps.table["fold"].to_numpy()
    for t in range(6):
        _, card = load_model(run_dir / "round1" / "models" / f"fold{t}.pt")
        assert t not in card.fold["train_folds"] and card.fold["validation_fold"] != t
        with np.load(run_dir / "round1" / "predictions" / f"fold{t}.npz") as z:
            assert np.array_equal(z["test_idx"], np.flatnonzero(folds == t))
            assert np.allclose(probs[z["test_idx"]], _softmax(z["test_logits"]), atol=1e-9)


def test_another_configuration_in_run_dir_is_a_run_state_error(protocol_run):
    ps, _, run_dir, _, _ = protocol_run
    with pytest.raises(RunStateError, match="another configuration"):
        run_protocol(ps, run_dir, TrainConfig.sample(epochs=1, width=2, threads=1),
                     stage="round1", progress=False)


def test_absent_training_class_warns_not_crashes(tmp_path):
    """A class present only in one fold is absent from that fold's training: warning."""
    ps, _ = synthetic_patchset(n=240, flip=0.0)
    labels = ps.labels.copy()
    only = np.flatnonzero(ps.table["fold"].to_numpy() == 0)[:10]
    labels[only] = 6  # water, only in fold 0
    ps.labels = labels
    ps.table.loc[only, "class"] = "water"
    cfg = TrainConfig.sample(epochs=1, width=2, batch_size=64, checkpoint_every=0, threads=1,
                             calibration="isotonic")
    with pytest.warns(UserWarning, match="water absent from the training folds"):
        metrics = run_protocol(ps, tmp_path / "run", cfg, stage="round1", progress=False)
    assert any("fold 0: class(es) water absent" in w for w in metrics["warnings"])
    # isotonic calibration (the option) is stored in the card where it lowered the validation
    # ECE (else identity, with the reason: issue 13) and used by the evaluation
    methods = set()
    for t in range(6):
        _, card = load_model(tmp_path / "run" / "round1" / "models" / f"fold{t}.pt")
        methods.add(card.calibration["method"])
        assert card.temperature > 0
        if card.calibration["method"] == "none":
            assert card.calibration["rejected"] == "isotonic" and "reason" in card.calibration
            # after one epoch (near-uniform outputs) isotonic raises the ECE: refused
            assert card.calibration["val_ece_after"] >= card.calibration["val_ece_before"]
        else:
            assert card.calibration["method"] == "isotonic"
            assert card.calibration["val_ece_after"] < card.calibration["val_ece_before"]
    from glacierfacies.training.evaluation import run_evaluation

    ev = run_evaluation(ps, tmp_path / "run")
    assert ev["round"] == 1
    assert ev["calibration"]["method"].startswith("/".join(sorted(methods)))
    assert [f["method"] for f in ev["calibration"]["folds"]] == [
        load_model(tmp_path / "run" / "round1" / "models" / f"fold{t}.pt")[1].calibration[
            "method"] for t in range(6)]
    assert 0.0 <= ev["calibration"]["ece_after"] <= 1.0


# ---------------------------------------------------------------- resumption after a kill


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glacierfacies.cli", *args], env=env,
                          capture_output=True, text=True)


def test_kill_mid_epoch_then_resume_gives_same_metrics(protocol_run, tmp_path):
    """`glacierfacies train` killed (SIGKILL) in round 2, fold 3, epoch 1, batch 5 (after the
    checkpoint at batch 3); the same command again resumes from that checkpoint and ends
    with the uninterrupted run's numbers."""
    ps, _, ref_dir, ref, _ = protocol_run
    ds, run = tmp_path / "ds", tmp_path / "run"
    ps.save(ds)
    args = ["train", str(ds), "-o", str(run), "--preset", "sample", "--epochs", "4", "--width",
            "4", "--batch-size", "16", "--lr", "3e-3", "--checkpoint-every", "3", "--seed", "3",
            "--threads", "1", "--quiet"]
    env = dict(os.environ, GLACIERFACIES_TEST_KILL_AT="2:3:1:5", OMP_NUM_THREADS="1")
    killed = _cli(*args, env=env)
    assert killed.returncode == -9, killed.stderr[-2000:]
    ckpt = torch.load(run / "round2" / "fold3.ckpt", weights_only=False)
    assert (ckpt["state"]["epoch"], ckpt["state"]["batch"]) == (1, 3)  # mid-epoch checkpoint
    assert not (run / "metrics.json").exists()  # round 1 and cleaning done, round 2 not
    assert (run / "stages" / "round2_fold2.json").is_file()
    assert not (run / "stages" / "round2_fold3.json").exists()
    # issue 23: models/ of the killed round holds 3 of 6 folds and no marker: not a model
    from glacierfacies.model.builtin import resolve_models

    assert sorted(p.name for p in (run / "models").glob("fold*.pt")) == [
        "fold0.pt", "fold1.pt", "fold2.pt"]
    assert not (run / "models" / "complete.json").exists()
    assert (run / "round1" / "models" / "complete.json").is_file()  # round 1 finished
    with pytest.raises(InputError, match=r"models: incomplete model folder: 3 fold model\(s\) "
                                         r"but no complete.json"):
        resolve_models([run / "models"])
    env.pop("GLACIERFACIES_TEST_KILL_AT")
    resumed = _cli(*args[:-1], env=env)  # not --quiet: one line per stage on stderr
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "macro F1 (round 2): cleaned test folds" in resumed.stdout
    for stage in ("round1_fold0", "clean", "round2_fold2"):
        assert f"[{stage}] up to date, skipped" in resumed.stderr
    assert "[round2_fold3] running" in resumed.stderr
    marker = json.loads((run / "models" / "complete.json").read_text())
    assert marker == {"round": 2, "folds": 6, "models": [f"fold{k}.pt" for k in range(6)]}
    assert [p.name for p in resolve_models([run / "models"])] == [
        f"fold{k}.json" for k in range(6)]
    for name in ("confusion_cleaned.png", "confusion_unpruned.png", "reliability.png"):
        assert (run / name).read_bytes()[:4] == b"\x89PNG", name  # the CLI draws them
    got = json.loads((run / "metrics.json").read_text())
    assert abs(got["macro_f1_cleaned"] - ref["macro_f1_cleaned"]) <= 1e-6
    assert abs(got["macro_f1_unpruned"] - ref["macro_f1_unpruned"]) <= 1e-6
    assert abs(got["calibration"]["ece_after"] - ref["calibration"]["ece_after"]) <= 1e-6
    a = np.load(run / "round2" / "oof_logits.npy")
    b = np.load(ref_dir / "round2" / "oof_logits.npy")
    assert np.abs(a - b).max() <= 1e-6
    # evaluate recomputes the same metrics from the stored predictions
    from click.testing import CliRunner

    from glacierfacies.cli import cli

    (run / "reliability.png").unlink()
    res = CliRunner().invoke(cli, ["evaluate", str(run), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (run / "reliability.png").is_file()
    again = json.loads((run / "metrics.json").read_text())
    assert again["macro_f1_cleaned"] == got["macro_f1_cleaned"]
    # another configuration in the same RUN_DIR is refused with one line
    other = _cli(*args[:-3], "--seed", "4", "--quiet", env=env)
    assert other.returncode == 1 and other.stderr.count("\n") == 1
    assert "another configuration" in other.stderr


def test_export_onnx(protocol_run, tmp_path):
    pytest.importorskip("onnx")
    from glacierfacies.model.onnx import export_onnx

    _, _, run_dir, _, _ = protocol_run
    out = export_onnx(run_dir / "models" / "fold0.pt", tmp_path / "m.onnx", size=40)
    assert out.stat().st_size > 1000
    ort = pytest.importorskip("onnxruntime")
    model, card = load_model(run_dir / "models" / "fold0.pt")
    x = np.random.default_rng(0).random((1, 3, 50, 60)).astype(np.float32)
    (got,) = ort.InferenceSession(str(out)).run(None, {"features": x})
    from glacierfacies.model.onnx import DenseProbabilities

    with torch.no_grad():
        want = DenseProbabilities(model, card)(torch.from_numpy(x)).numpy()
    assert got.shape == (1, 8, 24, 34) and np.abs(got - want).max() < 1e-5
