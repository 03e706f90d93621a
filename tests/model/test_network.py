"""The two-scale CNN: exact dense inference (dense = patch), patch-size rules, spectral MLP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glacierfacies.model.network import TwoScaleCNN, allowed_patch_sizes, pooled_grid_size

torch.set_num_threads(2)


def _randomise_bn(model: TwoScaleCNN, seed: int = 0) -> TwoScaleCNN:
    """Non-trivial BatchNorm statistics, so eval-mode BN is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def _dense_vs_patch(model: TwoScaleCNN, x: torch.Tensor, n_points: int, seed: int = 0) -> float:
    """Max |dense prob - patch prob| over n random pixels whose window fits in x."""
    s = model.patch_size
    with torch.no_grad():
        dense = model.dense_logits(x).softmax(1)[0]
        rng = np.random.default_rng(seed)
        oh, ow = dense.shape[-2:]
        ii, jj = rng.integers(0, oh, n_points), rng.integers(0, ow, n_points)
        patches = torch.stack([x[0, :, i:i + s, j:j + s] for i, j in zip(ii, jj, strict=True)])
        per_patch = torch.cat([model(patches[k:k + 512]) for k in range(0, n_points, 512)]).softmax(1)
        dense_at = dense[:, ii, jj].T
    assert dense.shape == (model.n_classes, x.shape[-2] - s + 1, x.shape[-1] - s + 1)
    return float((per_patch - dense_at).abs().max())


def test_dense_equals_patch_random_weights_512():
    torch.manual_seed(0)
    model = _randomise_bn(TwoScaleCNN(n_features=3, width=4, patch_size=33))
    x = torch.rand(1, 3, 512, 512)
    assert _dense_vs_patch(model, x, 1200) <= 1e-5


def test_dense_equals_patch_trained_model_512():
    """A briefly trained model (BN statistics and weights moved by Adam) stays exact."""
    torch.manual_seed(1)
    model = TwoScaleCNN(n_features=3, width=4, patch_size=33)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xs = torch.rand(64, 3, 33, 33)
    ys = (xs[:, 0, 16, 16] * 8).long().clamp(max=7)
    model.train()
    for _ in range(15):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()
    model.eval()
    bn = model.fine[0].bn
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    x = torch.rand(1, 3, 512, 512)
    assert _dense_vs_patch(model, x, 1000, seed=1) <= 1e-5


def test_dense_equals_patch_paper_configuration():
    """The real configuration: 11 features, width 64, S = 33, on a 128 x 128 input."""
    torch.manual_seed(2)
    model = _randomise_bn(TwoScaleCNN(n_features=11, width=64, patch_size=33), seed=2)
    x = torch.rand(1, 11, 128, 128)
    assert _dense_vs_patch(model, x, 300, seed=2) <= 1e-5


@pytest.mark.parametrize("patch_size", [1, 27, 39])
def test_dense_equals_patch_other_sizes(patch_size):
    torch.manual_seed(3)
    model = _randomise_bn(TwoScaleCNN(n_features=2, width=4, patch_size=patch_size), seed=3)
    x = torch.rand(1, 2, 80, 80)
    assert model.receptive_halo == patch_size // 2
    assert _dense_vs_patch(model, x, 200, seed=3) <= 1e-5


def test_dense_logits_shape_and_offset():
    """Output cell (i, j) is the patch logit centred on input pixel (i + S//2, j + S//2)."""
    torch.manual_seed(4)
    model = _randomise_bn(TwoScaleCNN(n_features=2, width=4, patch_size=33))
    x = torch.rand(2, 2, 40, 50)
    with torch.no_grad():
        d = model.dense_logits(x)
        assert d.shape == (2, 8, 8, 18)
        c = (20, 30)
        h = model.receptive_halo
        p = model(x[1:2, :, c[0] - h:c[0] + h + 1, c[1] - h:c[1] + h + 1])
    assert torch.allclose(d[1, :, c[0] - h, c[1] - h], p[0], atol=1e-6)


def test_patch_size_rules():
    assert allowed_patch_sizes(up_to=45) == [1, 27, 33, 39, 45]
    assert pooled_grid_size(33) == 9
    assert pooled_grid_size(1) == 0
    assert pooled_grid_size(21, fine_depth=3, coarse_depth=2) == 5
    for bad in (31, 35, 21, 3):
        with pytest.raises(ValueError, match="P odd"):
            TwoScaleCNN(n_features=3, patch_size=bad)


def test_spectral_mlp_and_input_checks():
    model = TwoScaleCNN(n_features=6, width=8, patch_size=1).eval()
    assert model.receptive_halo == 0 and model.spectral
    x = torch.rand(5, 6, 1, 1)
    assert model(x).shape == (5, 8)
    with pytest.raises(ValueError, match="expected patches"):
        model(torch.rand(5, 6, 3, 3))
    with pytest.raises(ValueError, match="expected"):
        TwoScaleCNN(n_features=3).dense_logits(torch.rand(1, 4, 40, 40))
    with pytest.raises(ValueError, match="smaller than the patch size"):
        TwoScaleCNN(n_features=3).dense_logits(torch.rand(1, 3, 20, 40))


def test_architecture_is_the_papers():
    """Three fine + three coarse 3x3 conv blocks, head of 3*width -> 32 -> 32 -> 8."""
    model = TwoScaleCNN(n_features=11)
    assert len(model.fine) == 3 and len(model.coarse) == 3
    assert model.fine[0].conv.weight.shape == (64, 11, 3, 3)
    assert model.dense1.in_features == 192 and model.dense1.out_features == 32
    assert model.out.out_features == 8
    assert model.dropout.p == 0.5
    assert model.coarse_size == 3 and model.pooled_size == 9


def test_fused_for_inference_equals_model_all_dense_paths():
    """BN folded into the convs, padded inputs, phase split and every max-pool variant:
    same logits (fp32 rounding), channels-last or not; the original model is untouched."""
    torch.manual_seed(4)
    model = _randomise_bn(TwoScaleCNN(n_features=3, width=8, patch_size=33), seed=4)
    x = torch.rand(2, 3, 70, 75)
    fused = model.fused_for_inference(pad_inputs_to=8)
    assert fused.input_channels == 8 and model.input_channels == 3
    assert all(isinstance(b.bn, torch.nn.Identity) for b in [*fused.fine, *fused.coarse])
    assert isinstance(model.fine[0].bn, torch.nn.BatchNorm2d)
    xp = torch.cat([x, torch.randn(2, 5, 70, 75)], dim=1)  # pad channels meet zero weights
    with torch.no_grad():
        ref = model.dense_logits(x)
        for pool in ("pool", "window", "slices"):
            for phase in (False, True):
                for inp in (xp, xp.contiguous(memory_format=torch.channels_last)):
                    out = fused.dense_logits(inp, phase_split=phase, pool=pool)
                    assert out.shape == ref.shape
                    assert float((out - ref).abs().max()) < 1e-4
        # patch forward of the fused copy (3 channels) equals the model's
        patches = x[:, :, :33, :33]
        assert torch.allclose(model(patches), model.fused_for_inference()(patches), atol=1e-5)
