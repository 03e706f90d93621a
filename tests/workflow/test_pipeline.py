"""The main job's plumbing: configuration files, stage skipping, the HTML report."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from glacierfacies.errors import InputError
from glacierfacies.workflow.config import RunConfig, load_config
from glacierfacies.workflow.figures import quicklook_png
from glacierfacies.workflow.html import Figure, Section, render_html
from glacierfacies.workflow.pipeline import Run


def test_config_yaml_and_toml_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "scenes: ['s/*.SAFE']\ndem: d.tif\noutlines: o.gpkg\nlabels: l.gpkg\n"
        "training: {epochs: 3}\nk_folds: 4\n")
    cfg, _ = load_config(tmp_path / "a.yaml")
    assert cfg.dem == str(tmp_path / "d.tif") and cfg.scenes == (str(tmp_path / "s/*.SAFE"),)
    assert cfg.training == {"epochs": 3} and cfg.k_folds == 4 and not cfg.uses_sample
    (tmp_path / "b.toml").write_text('dem = "/abs/d.tif"\nseed = 7\n')
    cfg, _ = load_config(tmp_path / "b.toml")
    assert cfg.dem == "/abs/d.tif" and cfg.seed == 7 and cfg.uses_sample


@pytest.mark.parametrize("text, problem", [
    ("colour: red\n", "unknown configuration key"),
    ("scenes: ['x']\n", "also set dem, outlines, labels"),
    ("- just\n- a list\n", "must be a mapping"),
    ("dem: [unclosed\n", "cannot parse"),
])
def test_bad_config_is_one_line_error_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as err:
        load_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_stages_skip_when_fingerprint_matches_and_rerun_when_config_changes(tmp_path):
    calls = []
    run = Run(tmp_path, RunConfig(), log=lambda m: None)
    assert run.stage("dataset", lambda: calls.append("a") or {"n": 1}) == {"n": 1}
    again = Run(tmp_path, RunConfig(), log=lambda m: None)
    assert again.stage("dataset", lambda: calls.append("b") or {"n": 2}) == {"n": 1}
    assert calls == ["a"] and again.skipped == ["dataset"]
    # a setting of this stage (or of an earlier one) changes: the stage runs again
    changed = Run(tmp_path, RunConfig(patch_size=27), log=lambda m: None)
    changed.stage("dataset", lambda: calls.append("c") or {})
    # a setting of a later stage does not touch it
    later = Run(tmp_path, RunConfig(patch_size=27, min_years=5), log=lambda m: None)
    later.stage("dataset", lambda: calls.append("d") or {})
    assert calls == ["a", "c"]
    marker = json.loads((tmp_path / "stages" / "dataset.json").read_text())
    assert marker["fingerprint"] == RunConfig(patch_size=27).fingerprint(
        ("scenes", "seed", "scenes", "dem", "outlines", "labels", "patch_size", "features",
         "k_folds", "band_map", "scale", "offset", "nodata", "product_mask", "mask_saturated",
         "s2_offset", "resolution", "fill_gaps"))


def test_a_stage_that_runs_invalidates_the_stages_after_it(tmp_path):
    run = Run(tmp_path, RunConfig(), log=lambda m: None)
    for stage in ("dataset", "train", "maps"):
        run.stage(stage, dict)
    (tmp_path / "stages" / "dataset.json").unlink()  # e.g. the dataset was rebuilt by hand
    again = Run(tmp_path, RunConfig(), log=lambda m: None)
    ran = []
    for stage in ("dataset", "train", "maps"):
        again.stage(stage, lambda s=stage: ran.append(s) or {})
    assert ran == ["dataset", "train", "maps"]


def test_failed_stage_leaves_no_marker(tmp_path):
    run = Run(tmp_path, RunConfig(), log=lambda m: None)

    def boom():
        raise InputError("x.tif", "corrupt")

    with pytest.raises(InputError):
        run.stage("maps", boom)
    assert not (tmp_path / "stages" / "maps.json").exists()


def test_report_embeds_every_figure_and_counts_broken_images(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.random((3, 40, 50)).astype(np.float32)
    classes = rng.integers(0, 8, (40, 50)).astype(np.uint8)
    classes[:5] = 255
    png = quicklook_png(rgb, classes, tmp_path / "q.png", title="scene")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = render_html("t", "intro", [Section("Maps", ["p"], [], [Figure("q", png, "c")])])
    payload = text.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(payload) == png.read_bytes()
    assert "data-broken-images" in text and "<h2 id='s0'>Maps</h2>" in text


def test_an_edited_input_file_reruns_its_stage_and_says_which(tmp_path):
    from glacierfacies.workflow.config import Inputs

    labels = tmp_path / "labels.gpkg"
    labels.write_bytes(b"v1")
    dem = tmp_path / "dem.tif"
    dem.write_bytes(b"dem")
    inputs = Inputs(scenes=[], dem=dem, outlines=dem, labels=labels, wgms=None)
    log: list[str] = []
    run = Run(tmp_path, RunConfig(), log=log.append)
    run.sign_inputs(inputs)
    run.stage("sample", dict)
    run.stage("dataset", dict)
    again = Run(tmp_path, RunConfig(), log=log.append)
    again.sign_inputs(inputs)
    assert again.done("sample") and again.done("dataset")
    labels.write_bytes(b"v2")  # same size, new content (and mtime)
    edited = Run(tmp_path, RunConfig(), log=log.append)
    edited.sign_inputs(inputs)
    assert edited.done("sample") and not edited.done("dataset")
    edited.stage("dataset", dict)
    assert any("input files changed: labels.gpkg" in m for m in log)


def test_training_resumes_only_its_own_fingerprint(tmp_path):
    """An interrupted train stage resumes; one whose inputs changed starts from scratch."""
    train = tmp_path / "train"
    resets = []

    def reset():
        resets.append(1)
        import shutil

        shutil.rmtree(train, ignore_errors=True)

    def interrupted():
        train.mkdir(exist_ok=True)
        (train / "fold0.ckpt").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Run(tmp_path, RunConfig(), log=lambda m: None).stage("train", interrupted, reset=reset)
    assert len(resets) == 1  # first start: nothing to keep
    Run(tmp_path, RunConfig(), log=lambda m: None).stage(
        "train", lambda: {"kept": (train / "fold0.ckpt").is_file()}, reset=reset)
    assert len(resets) == 1 and json.loads(
        (tmp_path / "stages" / "train.json").read_text())["summary"] == {"kept": True}
    (tmp_path / "stages" / "train.json").unlink()
    Run(tmp_path, RunConfig(seed=1), log=lambda m: None).stage("train", dict, reset=reset)
    assert len(resets) == 2 and not train.exists()


def test_presets_and_device_follow_the_configuration(tmp_path):
    from glacierfacies.workflow.config import train_config

    assert RunConfig().training_preset == "sample"
    user = RunConfig(scenes=("s/*",), dem="d", outlines="o", labels="l")
    assert user.training_preset == "paper"
    assert RunConfig(scenes=("s/*",), training_preset="sample").training_preset == "sample"
    assert train_config(RunConfig(device="cpu")).device == "cpu"  # honoured, not "auto"
    assert train_config(RunConfig(device="cpu", training_preset="paper")).batch_size == 256
    assert RunConfig(device="cpu").map_config.device == "cpu"


def test_run_with_bad_input_writes_nothing(tmp_path):
    from glacierfacies.workflow.pipeline import run_pipeline

    cfg = tmp_path / "bad.yaml"
    (tmp_path / "dem.tif").write_bytes(b"")
    cfg.write_text("scenes: ['scenes/*.SAFE']\ndem: dem.tif\noutlines: o.gpkg\nlabels: l.gpkg\n")
    out = tmp_path / "out"
    with pytest.raises(InputError, match="no scene matches"):
        run_pipeline(cfg, out, log=lambda m: None)
    assert not out.exists()
    out.mkdir()
    with pytest.raises(InputError, match="training_preset"):
        cfg.write_text("training_preset: huge\n")
        run_pipeline(cfg, out, log=lambda m: None)
    assert list(out.iterdir()) == []


def test_real_stage_is_signed_by_the_builtin_model_files(tmp_path):
    """The demo's real section maps with the built-in models: their files join the real
    stage's fingerprint (after `make models` the section is remapped), not the earlier ones."""
    from glacierfacies.model.builtin import builtin_files
    from glacierfacies.workflow.config import Inputs
    from glacierfacies.workflow.inputs import STAGE_INPUTS, input_signatures

    f = tmp_path / "x.tif"
    f.write_bytes(b"x")
    sig = input_signatures(Inputs([f], f, f, f, None), tmp_path)
    signed = {Path(s["path"]).name for s in sig["builtin_models"]}
    for name in ("landsat", "sentinel2"):
        assert {p.name for p in builtin_files(name)} <= signed
    assert {"model.json", "fold0.json"} <= signed
    assert [s for s, groups in STAGE_INPUTS.items() if "builtin_models" in groups] == ["real"]
