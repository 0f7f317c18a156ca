"""Shapes and invariants of the U-Net, the GRU classifier and the sampler."""

import torch

from tardiff.classifier import GRUClassifier, GRUClassifierConfig
from tardiff.config import DiffusionConfig
from tardiff.diffusion import GaussianDiffusion
from tardiff.sampling import InfluenceGuidance, generate
from tardiff.training import build_unet


def _tiny_unet(channels=3):
    config = DiffusionConfig(base_channels=16, channel_mult=(1, 2), attention_levels=(1,), num_heads=2)
    torch.manual_seed(0)
    model = build_unet(config, channels)
    with torch.no_grad():  # zero-initialised layers would hide the conditioning; give them weights
        for name, p in model.named_parameters():
            if name.startswith("out.") or ".conv2." in name:
                p.normal_(0, 0.1)
    return model.eval()


def test_unet_output_shape_and_label_conditioning():
    model = _tiny_unet()
    x = torch.randn(4, 3, 8)
    t = torch.tensor([0, 10, 100, 199])
    out0 = model(x, t, torch.zeros(4, dtype=torch.long))
    out1 = model(x, t, torch.ones(4, dtype=torch.long))
    assert out0.shape == x.shape
    assert not torch.allclose(out0, out1)


def test_unet_has_no_batch_coupling():
    model = _tiny_unet()
    x = torch.randn(5, 3, 8)
    t = torch.full((5,), 50)
    y = torch.tensor([0, 1, 0, 1, 1])
    batch = model(x, t, y)
    alone = model(x[2:3], t[2:3], y[2:3])
    assert torch.allclose(batch[2:3], alone, atol=1e-5)


def test_classifier_unrolled_forward_matches_nn_gru():
    torch.manual_seed(0)
    model = GRUClassifier(GRUClassifierConfig(3, 8, num_layers=2, dropout=0.2)).eval()
    x = torch.randn(6, 10, 3)
    assert torch.allclose(model(x), model.forward_unrolled(x), atol=1e-5)


def _sample(guidance_scale, gradient_at="pred_x0"):
    model = _tiny_unet()
    torch.manual_seed(1)
    classifier = GRUClassifier(GRUClassifierConfig(3, 4, num_layers=1, dropout=0.0)).eval()
    vector = torch.randn(sum(p.numel() for p in classifier.parameters()))
    guidance = InfluenceGuidance(classifier, vector / vector.norm(), "dot", guidance_scale, gradient_at)
    diffusion = GaussianDiffusion(200, 5e-4, 0.1)
    return generate(model, diffusion, {0: 3, 1: 2}, (3, 8), 5, 1.0, 4, seed=3, device=torch.device("cpu"),
                    guidance=guidance)


def test_zero_guidance_scale_equals_unguided_sampling():
    x_zero, y_zero, _ = _sample(0.0)
    model = _tiny_unet()
    diffusion = GaussianDiffusion(200, 5e-4, 0.1)
    x_plain, y_plain, _ = generate(model, diffusion, {0: 3, 1: 2}, (3, 8), 5, 1.0, 4, 3, torch.device("cpu"))
    assert (y_zero == y_plain).all()
    assert torch.allclose(torch.as_tensor(x_zero), torch.as_tensor(x_plain))


def test_guidance_moves_samples_in_both_gradient_modes():
    x_plain, y, _ = _sample(0.0)
    assert x_plain.shape == (5, 8, 3)
    assert y.tolist() == [0, 0, 0, 1, 1]
    for gradient_at in ("pred_x0", "x_t"):
        x_guided, _, norms = _sample(50.0, gradient_at)
        shift = abs(x_guided - x_plain).mean()
        assert shift > 1e-4, gradient_at
        assert all(n > 0 for n in norms)
