"""Baseline generators: ROS, SMOTE, TimeVAE, TimeGAN, classifier guidance, and the baselines stage."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
import yaml

from tardiff.baselines import (
    generate_timegan,
    generate_timevae,
    random_oversample,
    sample_timegan,
    smote,
    train_timegan,
    train_timevae,
)
from tardiff.baselines.timevae import TimeVAE
from tardiff.config import (
    BASELINE_METHODS,
    ClassifierConfig,
    ConfigError,
    DiffusionConfig,
    TimeGANConfig,
    TimeVAEConfig,
    load_params,
    params_from_dict,
)
from tardiff.errors import TardiffInputError
from tardiff.sampling import ClassifierGuidance, counts_per_label, generate, log_likelihood_gradient
from tardiff.training import build_diffusion, train_classifier, train_diffuser
from tests.stage_project import PROJECT_ROOT, tiny_params

COUNTS = {0: 30, 1: 12}
TINY_VAE = TimeVAEConfig(latent_dim=4, hidden_sizes=(8, 16), batch_size=16, epochs=3)
TINY_GAN = TimeGANConfig(hidden_dim=8, num_layers=2, batch_size=16, embedding_iterations=20,
                         supervised_iterations=20, joint_iterations=5)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run this module's tiny models on one thread: on tensors this small, a second intra-op thread only adds
    synchronisation, which costs orders of magnitude when other processes share the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _labelled(n0=30, n1=12, time=8, channels=3, seed=0):
    """Return float32 series where class 1 is shifted up in channel 0, and int64 labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n0 + n1, time, channels)).astype(np.float32)
    y = np.array([0] * n0 + [1] * n1, dtype=np.int64)
    x[y == 1, :, 0] += 2.0
    return x, y


def _sine_series(n=64, time=12, channels=2, seed=0):
    """Return smooth series, easy for an autoencoder to learn."""
    rng = np.random.default_rng(seed)
    steps = np.linspace(0, 2 * np.pi, time)[None, :, None]
    amplitude = rng.uniform(0.5, 1.5, (n, 1, channels))
    phase = rng.uniform(0, 1, (n, 1, channels))
    return (amplitude * np.sin(steps + phase) + rng.normal(0, 0.05, (n, time, channels))).astype(np.float32)


def _run_all(x, y, counts, seed):
    vae = generate_timevae(x, y, counts, TINY_VAE, seed)
    gan = generate_timegan(x, y, counts, TINY_GAN, seed)
    return {
        "ros": random_oversample(x, y, counts, seed),
        "smote": smote(x, y, counts, 5, seed),
        "timevae": (vae.x, vae.y),
        "timegan": (gan.x, gan.y),
    }


@pytest.fixture(scope="module")
def outputs():
    x, y = _labelled()
    return x, y, _run_all(x, y, COUNTS, seed=7), _run_all(x, y, COUNTS, seed=7)


@pytest.mark.parametrize("method", ["ros", "smote", "timevae", "timegan"])
def test_baseline_shape_dtype_and_counts(outputs, method):
    x, _, first, _ = outputs
    x_syn, y_syn = first[method]
    assert x_syn.shape == (sum(COUNTS.values()), *x.shape[1:])
    assert x_syn.dtype == np.float32
    assert y_syn.dtype == np.int64
    assert counts_per_label(y_syn) == COUNTS
    assert np.isfinite(x_syn).all()


@pytest.mark.parametrize("method", ["ros", "smote", "timevae", "timegan"])
def test_baseline_is_seeded(outputs, method):
    _, _, first, second = outputs
    assert np.array_equal(first[method][0], second[method][0])
    assert np.array_equal(first[method][1], second[method][1])


def test_other_seed_gives_other_samples():
    x, y = _labelled()
    assert not np.array_equal(random_oversample(x, y, COUNTS, 1)[0], random_oversample(x, y, COUNTS, 2)[0])
    assert not np.array_equal(smote(x, y, COUNTS, 5, 1)[0], smote(x, y, COUNTS, 5, 2)[0])


def test_ros_samples_are_copies_of_same_class_records():
    x, y = _labelled()
    x_syn, y_syn = random_oversample(x, y, COUNTS, seed=3)
    for sample, label in zip(x_syn, y_syn):
        matches = np.flatnonzero((x == sample).all(axis=(1, 2)))
        assert matches.size >= 1
        assert (y[matches] == label).all()


def test_ros_draws_with_replacement():
    x, y = _labelled(n0=30, n1=3)
    x_syn, y_syn = random_oversample(x, y, {0: 30, 1: 30}, seed=0)
    minority = x_syn[y_syn == 1].reshape(30, -1)
    assert np.unique(minority, axis=0).shape[0] <= 3


def test_smote_samples_lie_between_same_class_neighbours():
    k = 3
    x, y = _labelled()
    x_syn, y_syn = smote(x, y, COUNTS, k_neighbors=k, seed=5)
    for sample, label in zip(x_syn.reshape(len(y_syn), -1), y_syn):
        real = x[y == label].reshape(-1, x_syn[0].size).astype(np.float64)
        distances = np.linalg.norm(real[:, None] - real[None], axis=-1)
        neighbours = np.argsort(distances, axis=1)[:, 1 : k + 1]  # column 0 is the series itself
        on_segment = False
        for i, row in enumerate(real):
            for j in neighbours[i]:
                step = real[j] - row
                lam = float((sample - row) @ step / (step @ step))
                if 0.0 <= lam <= 1.0 and np.allclose(row + lam * step, sample, atol=1e-4):
                    on_segment = True
        assert on_segment


@pytest.mark.parametrize("method", ["ros", "smote", "timevae", "timegan"])
def test_bad_inputs_raise_input_error(method):
    x, y = _labelled()
    run = {
        "ros": lambda x, y: random_oversample(x, y, COUNTS, 0),
        "smote": lambda x, y: smote(x, y, COUNTS, 5, 0),
        "timevae": lambda x, y: generate_timevae(x, y, COUNTS, TINY_VAE, 0),
        "timegan": lambda x, y: generate_timegan(x, y, COUNTS, TINY_GAN, 0),
    }[method]
    with pytest.raises(TardiffInputError, match="one class only"):
        run(x, np.zeros_like(y))
    with pytest.raises(TardiffInputError, match="shape"):
        run(x.reshape(len(y), -1), y)
    with pytest.raises(TardiffInputError, match="shape"):
        run(x, y[:-1])
    with_nan = x.copy()
    with_nan[3, 2, 1] = np.nan
    with pytest.raises(TardiffInputError, match="NaN"):
        run(with_nan, y)


def test_requested_label_missing_from_data_is_rejected():
    x, y = _labelled()
    with pytest.raises(TardiffInputError, match="label 2 has 0 real series"):
        random_oversample(x, y, {0: 5, 2: 5}, 0)


def test_empty_request_is_rejected():
    x, y = _labelled()
    with pytest.raises(TardiffInputError, match="request at least one sample"):
        random_oversample(x, y, {0: 0, 1: 0}, 0)
    with pytest.raises(TardiffInputError, match="dtype int64"):
        smote(np.zeros((42, 8, 3), dtype=np.int64), y, COUNTS, 5, 0)


def test_smote_needs_more_series_than_neighbours():
    x, y = _labelled(n0=30, n1=4)
    with pytest.raises(TardiffInputError, match="label 1 has 4 real series.*at least 6"):
        smote(x, y, {0: 30, 1: 4}, k_neighbors=5, seed=0)


def test_timevae_reduces_its_loss():
    fit = train_timevae(_sine_series(), dataclasses.replace(TINY_VAE, epochs=15), seed=0)
    losses = fit.history["loss"]
    assert len(losses) == 15
    assert losses[-1] < 0.5 * losses[0]
    assert fit.history["reconstruction"][-1] < fit.history["reconstruction"][0]


def test_timevae_trend_block_is_polynomial_in_time():
    config = TimeVAEConfig(latent_dim=3, hidden_sizes=(4,), trend_poly=1, use_residual=False)
    torch.manual_seed(0)
    model = TimeVAE(10, 2, config).eval()
    with torch.no_grad():
        series = model.decode(torch.randn(4, 3))
    # Level plus a linear trend: every second difference over time vanishes.
    assert torch.allclose(series.diff(n=2, dim=1), torch.zeros(4, 8, 2), atol=1e-5)
    assert series.diff(dim=1).abs().max() > 1e-4


def test_timevae_seasonal_block_repeats_per_cycle():
    config = TimeVAEConfig(latent_dim=3, hidden_sizes=(4,), trend_poly=0, seasons=((2, 3),), use_residual=False)
    torch.manual_seed(0)
    model = TimeVAE(12, 2, config).eval()
    with torch.no_grad():
        series = model.decode(torch.randn(4, 3))
    # Two seasons of three steps: constant within a season, period of six steps.
    assert torch.allclose(series[:, 0], series[:, 2])
    assert torch.allclose(series[:, 3], series[:, 5])
    assert torch.allclose(series[:, :6], series[:, 6:])
    assert not torch.allclose(series[:, 0], series[:, 3])


def test_timevae_handles_length_not_divisible_by_strides():
    fit = train_timevae(_sine_series(n=8, time=7), dataclasses.replace(TINY_VAE, epochs=1), seed=0)
    assert fit.model.decode(torch.randn(2, TINY_VAE.latent_dim)).shape == (2, 7, 2)


def test_timegan_reduces_autoencoder_and_supervised_losses():
    config = dataclasses.replace(TINY_GAN, embedding_iterations=300, supervised_iterations=300, joint_iterations=10)
    x = _sine_series()
    fit = train_timegan(x, config, seed=0)
    embedding, supervised = fit.history["embedding_mse"], fit.history["supervised_mse"]
    assert len(embedding) == 6  # means over 50-iteration windows
    assert embedding[-1] < 0.5 * embedding[0]
    assert supervised[-1] < 0.5 * supervised[0]
    for key in ("generator_adversarial", "generator_moments", "generator_supervised", "discriminator"):
        assert np.isfinite(fit.history[key]).all(), key

    samples = sample_timegan(fit, 20, x.shape[1], seed=1)
    assert samples.shape == (20, 12, 2)
    # The recovery network ends in a sigmoid, so samples stay inside the training range per channel.
    assert (samples >= x.min(axis=(0, 1)) - 1e-5).all()
    assert (samples <= x.max(axis=(0, 1)) + 1e-5).all()


@pytest.fixture(scope="module")
def guidance_models():
    """A classifier and a diffuser trained briefly on tiny two-class series (8 steps, 2 channels)."""
    x, y = _labelled(n0=48, n1=48, time=8, channels=2)
    classifier = train_classifier(
        x, y, ClassifierConfig(hidden_size=8, num_layers=1, dropout=0.0, epochs=15, batch_size=32),
        torch.device("cpu"), seed=0,
    ).model
    diffusion_config = DiffusionConfig(
        timesteps=50, base_channels=8, channel_mult=(1, 2), attention_levels=(), num_heads=1,
        train_steps=30, warmup_steps=5, batch_size=32, checkpoint_every=30,
    )
    result = train_diffuser(x, y, diffusion_config, torch.device("cpu"), seed=0)
    return classifier, result.model.eval(), build_diffusion(diffusion_config)


def _log_p(classifier, x, y):
    with torch.no_grad():
        logits = classifier(torch.as_tensor(x))
    return F.logsigmoid((2.0 * torch.as_tensor(y) - 1.0) * logits).numpy()


@pytest.mark.parametrize("gradient_at", ["pred_x0", "x_t"])
def test_classifier_guidance_raises_log_likelihood(guidance_models, gradient_at):
    classifier, model, diffusion = guidance_models
    counts = {0: 16, 1: 16}

    def sample(scale):
        guidance = ClassifierGuidance(classifier, scale, gradient_at)
        return generate(model, diffusion, counts, (2, 8), 5, 1.0, 16, seed=11, device=torch.device("cpu"),
                        guidance=guidance)

    x_plain, y_plain, norms_plain = sample(0.0)
    x_guided, y_guided, norms = sample(1.0)
    assert np.array_equal(y_plain, y_guided)
    assert norms_plain == []
    assert all(n > 0 for n in norms)
    assert _log_p(classifier, x_guided, y_guided).mean() > _log_p(classifier, x_plain, y_plain).mean()


def test_log_likelihood_gradient_is_per_sample_and_matches_finite_difference(guidance_models):
    classifier = guidance_models[0]
    x = torch.randn(5, 8, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1, 0, 1])
    batch = log_likelihood_gradient(classifier, x, y)
    alone = log_likelihood_gradient(classifier, x[2:3], y[2:3])
    assert torch.allclose(batch[2:3], alone, atol=1e-6)

    direction = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    step = 1e-3
    up = _log_p(classifier, (x[2] + step * direction)[None].numpy(), y[2:3].numpy())[0]
    down = _log_p(classifier, (x[2] - step * direction)[None].numpy(), y[2:3].numpy())[0]
    assert (up - down) / (2 * step) == pytest.approx(float((batch[2] * direction).sum()), rel=2e-2, abs=1e-4)


def test_unknown_baseline_names_the_choices():
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    raw["baselines"]["methods"] = ["ros", "vqvae"]
    with pytest.raises(ConfigError, match=r"baselines.methods.*'vqvae'.*classifier_guidance"):
        params_from_dict(raw)


def test_baselines_section_checks_nested_keys_and_values():
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    raw["baselines"]["timegan"]["iterations"] = 5
    with pytest.raises(ConfigError, match=r"iterations.*baselines.timegan"):
        params_from_dict(raw)
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    raw["baselines"]["timevae"]["seasons"] = [[4]]
    with pytest.raises(ConfigError, match="num_seasons, steps_per_season"):
        params_from_dict(raw)
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    raw["baselines"]["methods"] = []
    raw["evaluate"]["baselines"] = []
    with pytest.raises(ConfigError, match="baselines.methods.*empty"):
        params_from_dict(raw)


def test_paper_profile_sets_the_authors_budgets():
    paper = load_params(PROJECT_ROOT / "params.yaml", profile="paper").baselines
    assert paper.timevae.batch_size == 16
    assert paper.timevae.epochs == 1000
    assert paper.timegan.joint_iterations == 50000
    assert (paper.timegan.hidden_dim, paper.timegan.num_layers, paper.timegan.batch_size) == (24, 3, 128)
    assert paper.methods == BASELINE_METHODS


@pytest.fixture(scope="module")
def stage_project(tmp_path_factory, physionet2012_dir):
    """Run preprocess, train_diffuser, train_classifier and baselines on the tiny profile in a temporary folder."""
    from tasks import baselines, preprocess, train_classifier, train_diffuser
    from tasks.common import cohort_context

    root = tmp_path_factory.mktemp("baselines-project")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(physionet2012_dir)))
    previous = Path.cwd()
    os.chdir(root)
    try:
        params = load_params("params.yaml")
        with cohort_context(params.cohort):
            for module in (preprocess, train_diffuser, train_classifier, baselines):
                module.main(params, root)
        yield root
    finally:
        os.chdir(previous)


def test_stage_writes_every_baseline_with_training_counts(stage_project):
    with np.load(stage_project / "outputs/physionet2012/preprocess/cohort.npz") as cohort:
        train_x, train_y = cohort["train_x"], cohort["train_y"]
    for method in BASELINE_METHODS:
        with np.load(stage_project / f"outputs/physionet2012/baselines/{method}.npz") as data:
            x, y = data["x"], data["y"]
        assert x.shape == train_x.shape, method
        assert x.dtype == np.float32, method
        assert counts_per_label(y) == counts_per_label(train_y), method
        assert np.isfinite(x).all(), method
        frame = pl.read_parquet(stage_project / f"outputs/physionet2012/baselines/{method}.parquet")
        assert frame.height == x.shape[0] * x.shape[1], method
        # Clinical units, not z-scores: the median heart rate is tens of beats per minute.
        assert 40 < frame["HR"].median() < 140, method


def test_stage_records_time_and_counts_per_method(stage_project):
    metrics = json.loads((stage_project / "metrics/physionet2012/baselines.json").read_text())
    assert list(metrics) == list(BASELINE_METHODS)
    for method, record in metrics.items():
        assert record["seconds"] > 0, method
        assert record["samples"] == sum(record["samples_per_class"].values()), method
    history = json.loads((stage_project / "outputs/physionet2012/baselines/training_history.json").read_text())
    assert set(history) == {"timevae", "timegan"}
    assert set(history["timevae"]) == {"0", "1"}
