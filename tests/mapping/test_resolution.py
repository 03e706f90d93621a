"""`--resolution 10|20|30`: the target grid, recorded in the model card, checked at map time."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glacierfacies.errors import InputError, ModelMismatchError


def _model(path, resolution_m=None):
    import torch

    from glacierfacies.classes import CLASS_NAMES
    from glacierfacies.features import FEATURE_NAMES
    from glacierfacies.model.card import ModelCard, save_model
    from glacierfacies.model.network import TwoScaleCNN

    torch.manual_seed(0)
    m = TwoScaleCNN(len(FEATURE_NAMES), width=4, patch_size=27).eval()
    card = ModelCard(features=list(FEATURE_NAMES), classes=list(CLASS_NAMES), patch_size=27,
                     normalisation={"min": [0.0] * 11, "max": [1.0] * 11},
                     architecture=m.kwargs, training={})
    if resolution_m is not None:
        card.resolution_m = resolution_m
    save_model(m, card, path)
    return path


def test_resolution_option_grid_card_and_mismatch(sample_dir, tmp_path):
    import rasterio

    from glacierfacies.mapping.config import MapConfig
    from glacierfacies.mapping.scene_map import map_scene
    from glacierfacies.scenes.options import ReadOptions
    from glacierfacies.scenes.reader import find_scenes, read_scene, scene_grid

    with pytest.raises(InputError, match="--resolution must be one of 10, 20, 30"):
        ReadOptions(resolution_m=25)
    assert ReadOptions.from_dict({"resolution_m": 30}).resolution_m == 30.0
    landsat = [s for s in find_scenes(sample_dir / "scenes") if s.name.startswith("LC")][0]
    g10, g30 = scene_grid(landsat), scene_grid(landsat, 30.0)
    assert abs(g30.transform.a) == 30.0 and abs(g10.transform.a) == 10.0
    assert g30.shape == (g10.height // 3, g10.width // 3)  # the 30 m product's own grid
    sc = read_scene(landsat, options=ReadOptions(resolution_m=30))
    assert sc.grid.shape == g30.shape and sc.grid.transform == g30.transform
    kw = dict(dem=sample_dir / "dem.tif", outlines=sample_dir / "outlines.gpkg",
              progress=False, config=MapConfig(read=ReadOptions(resolution_m=30)))
    # a model card without the field is a 10 m model: refused on a 30 m grid, naming it
    m10 = _model(tmp_path / "m10.pt")
    assert json.loads(m10.with_suffix(".json").read_text())["resolution_m"] == 10.0
    with pytest.raises(ModelMismatchError, match="trained on a 10 m grid.*read on 30 m") as e:
        map_scene(landsat, models=[m10], out=tmp_path / "a.tif", **kw)
    assert "m10.pt" in str(e.value)
    assert not (tmp_path / "a.tif").exists()
    # a built-in model (10 m) is checked through its fold models, too
    with pytest.raises(ModelMismatchError, match="trained on a 10 m grid") as e:
        map_scene(landsat, models=["builtin:landsat"], out=tmp_path / "a.tif", **kw)
    assert "fold0.pt" in str(e.value) and not (tmp_path / "a.tif").exists()
    m30 = _model(tmp_path / "m30.pt", resolution_m=30.0)
    res = map_scene(landsat, models=[m30], out=tmp_path / "b.tif", **kw)
    with rasterio.open(tmp_path / "b.tif") as ds:
        assert ds.res == (30.0, 30.0) and ds.shape == g30.shape
        classes = ds.read(1)
    assert res.n_classified == int((classes != 255).sum()) > 0
    np.testing.assert_array_equal(np.unique(classes[classes != 255]) < 8, True)
