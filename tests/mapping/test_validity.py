"""Validity per model (issue 15): mask only on the features a model uses."""

from __future__ import annotations

import numpy as np
import torch

from glacierfacies.features import FEATURE_NAMES
from glacierfacies.mapping.inference import NODATA, dense_predict
from glacierfacies.model.member import Member
from glacierfacies.model.network import TwoScaleCNN


def _member(features):
    torch.manual_seed(0)
    idx = [FEATURE_NAMES.index(f) for f in features]
    return Member(TwoScaleCNN(len(idx), width=4, patch_size=27).eval(), feature_index=idx)


def test_dem_void_blanks_only_models_that_use_the_dem():
    rng = np.random.default_rng(0)
    h = w = 80
    feats = rng.random((11, h, w), dtype=np.float32)
    feats[FEATURE_NAMES.index("elevation"), 40, 40] = np.nan  # one SRTM void
    optical = _member(FEATURE_NAMES[:6])
    full = _member(FEATURE_NAMES)
    inner = np.zeros((h, w), bool)
    inner[13:-13, 13:-13] = True  # pixels whose 27 x 27 window fits
    p_opt = dense_predict(optical, feats, tile_size=32)
    p_all = dense_predict(full, feats, tile_size=32)
    assert (p_opt.classes[inner] != NODATA).all()  # the void is not an input of this model
    blank = p_all.classes == NODATA
    window = np.zeros((h, w), bool)
    window[27:54, 27:54] = True  # the 27 x 27 pixels whose window holds the void
    np.testing.assert_array_equal(blank[inner], (window | ~inner)[inner])
    assert int((blank & inner).sum()) == 27 * 27
    # an ensemble masks on the union of its members' features
    p_ens = dense_predict([optical, full], feats, tile_size=32)
    np.testing.assert_array_equal(p_ens.classes == NODATA, blank)
    # the product mask (observed) removes the pixel itself, not its window
    observed = np.ones((h, w), bool)
    observed[20, 20] = False
    p_obs = dense_predict(optical, feats, observed=observed, tile_size=32)
    gone = (p_obs.classes == NODATA) & inner
    assert gone.sum() == 1 and gone[20, 20]
    np.testing.assert_array_equal(p_obs.classes[inner & observed], p_opt.classes[inner & observed])
