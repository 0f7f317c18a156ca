"""Typed parameters of every pipeline stage, loaded from ``params.yaml``.

``params.yaml`` holds one section per stage plus two mappings of overrides:
``cohorts`` (one entry per dataset and task, selected by the top-level ``cohort``
key or the stages' ``--cohort`` option) and ``profiles`` (CPU default, the paper's
GPU settings, tiny test settings; selected by ``profile``). The selected cohort's
overrides are deep-merged over the base sections first, then the profile's. Each
section becomes one frozen dataclass; unknown or mistyped keys raise
:class:`ConfigError` naming the key and the file.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tardiff.errors import TardiffInputError


class ConfigError(TardiffInputError):
    """Invalid or missing value in ``params.yaml``."""


@dataclass(frozen=True)
class ChannelSpec:
    """One output channel of the hourly grid, built from one or more raw variables."""

    name: str
    sources: tuple[str, ...]  # raw variable names, highest priority first
    unit: str
    valid_min: float  # observations outside [valid_min, valid_max] are dropped and counted
    valid_max: float
    aggregate: str = "mean"  # how observations inside one hour combine: "mean", or "sum" for volumes


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "physionet2012"
    dir: str = "../shared/data/physionet2012"
    sets: tuple[str, ...] = ("a", "b", "c")
    max_stays: int | None = None  # keep only the first N stays by record id (quick runs, tests)
    hours: int = 24
    normaliser: str = "zscore"  # "zscore" or "pit" (per-channel centred probability integral transform)
    split_train: float = 0.8
    split_val: float = 0.1
    split_test: float = 0.1
    verify_checksums: bool = True
    channels: tuple[ChannelSpec, ...] = ()
    # Reader options; each reader documents which of them it reads (tardiff/data/).
    task: str = ""  # which label a multi-task source builds, e.g. yaib: mortality24, los or aki
    min_stay_hours: float = 0.0  # stays shorter than this are excluded and counted
    exclude_positive_in_window: bool = False  # drop stays whose label turns positive inside the window
    los_threshold_hours: float = 72.0  # length-of-stay task: positive when the stay lasts longer
    observations_file: str = ""  # bring-your-own formats: file or folder inside data.dir
    labels_file: str = ""
    time_unit: str = "hours"  # long format: unit of the time column ("hours", "minutes" or "datetime")


@dataclass(frozen=True)
class DiffusionConfig:
    timesteps: int = 200
    beta_start: float = 5e-4
    beta_end: float = 0.1
    loss: str = "l1"  # "l1" (released code) or "l2" (paper)
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (1, 2)  # indices into channel_mult that get self-attention
    num_heads: int = 4
    dropout: float = 0.0
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    train_steps: int = 3000
    batch_size: int = 128
    ema_decay: float = 0.999
    checkpoint_every: int = 500


@dataclass(frozen=True)
class ClassifierConfig:
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 15


@dataclass(frozen=True)
class IhvpConfig:
    method: str = "cg"  # one of tardiff.ihvp.IHVP_METHODS
    guide_class: str = "all"  # "all", "0" or "1": which labels of the validation split form the guidance set
    damping: float = 0.01  # starting damping lambda of (H + lambda I)
    damping_increases: int = 3  # times lambda may grow tenfold when the damped Hessian is indefinite
    max_iter: int = 100
    tol: float = 1e-6  # relative residual at which conjugate gradient stops
    hessian_samples: int = 2048  # training samples whose mean loss defines the Hessian
    lissa_depth: int = 200  # recursion steps per LiSSA run
    lissa_repeats: int = 1  # independent LiSSA runs averaged
    lissa_batch: int = 256  # training samples per LiSSA Hessian-vector product
    lissa_scale: float = 0.0  # LiSSA's scale; 0 sets 1.5 x (top Hessian eigenvalue + damping)
    power_iterations: int = 20  # for the top-eigenvalue estimate behind an automatic LiSSA scale
    arnoldi_iterations: int = 40  # Hessian-vector products of the Arnoldi iteration
    arnoldi_top_k: int = 20  # eigenpairs kept


@dataclass(frozen=True)
class GenerateConfig:
    sampling_steps: int = 20
    eta: float = 1.0
    guidance_scale: float = 100.0
    gradient_at: str = "pred_x0"  # "pred_x0" (TarDiff's released code) or "x_t" (the TarDiff paper's equation)
    guidance_gradient: str = "finite_difference"  # "finite_difference" or "double_backward"
    unit_vector: bool = True  # rescale the precomputed vector to unit norm
    score: str = "auto"  # "auto" (the estimator's own: cos for grad_cos, else dot), "dot", "cos" or "logit"
    batch_size: int = 512
    use_ema: bool = True


EVALUATOR_NAMES = ("gru", "timesnet", "gbt", "logreg")  # the keys of tardiff.evaluators.EVALUATORS


@dataclass(frozen=True)
class EvaluateConfig:
    evaluators: tuple[str, ...] = ("gru", "timesnet", "gbt")  # downstream models, each run on every protocol
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    alphas: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    bootstrap_replicates: int = 1000  # resamples of the real test split behind each 95% interval
    bootstrap_seed: int = 0
    paired_baseline: str = "unguided"  # every other synthetic source is compared with this one, seed by seed
    baselines: tuple[str, ...] = ()  # outputs of the baselines stage evaluated beside guided and unguided
    workers: int = 1  # processes that fit side by side on a CPU and share torch's threads, with unchanged results
    # gru: the bidirectional GRU of tardiff.classifier
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 10
    # timesnet: tardiff.timesnet. The defaults are sized for a CPU; the paper profile sets the authors' values
    timesnet_d_model: int = 16
    timesnet_d_ff: int = 16
    timesnet_top_k: int = 2
    timesnet_num_kernels: int = 2
    timesnet_e_layers: int = 2
    timesnet_dropout: float = 0.1
    timesnet_lr: float = 1e-3
    timesnet_batch_size: int = 128
    timesnet_epochs: int = 5
    # gbt: scikit-learn's HistGradientBoostingClassifier on per-channel summary features
    gbt_max_iter: int = 200
    gbt_learning_rate: float = 0.1
    gbt_max_leaf_nodes: int = 31
    gbt_max_features: float = 1.0  # fraction of features per split; below 1 the seed changes the fit
    # logreg: L2-penalised logistic regression on the same standardised features
    logreg_c: float = 1.0


@dataclass(frozen=True)
class FidelityConfig:
    holdout: str = "test"  # real split of records the generator never saw: "val" or "test"
    discriminator_hidden_size: int = 32
    discriminator_num_layers: int = 1
    discriminator_epochs: int = 8
    predictor_hidden_size: int = 32
    predictor_num_layers: int = 1
    predictor_epochs: int = 5
    batch_size: int = 256
    lr: float = 3e-3  # Adam, for both networks
    test_fraction: float = 0.2  # share of each side held out to score the discriminator
    max_samples: int = 5000  # series per side for the discriminator and the predictor's training set
    mmd_max_samples: int = 2000  # rows per set for MMD; memory grows with its square (2000: about 300 MB)
    acf_max_lag: int = 6  # hours
    copy_tolerance: float = 1e-3  # RMS difference per cell, normalised units, below which a sample copies a record
    distance_chunk: int = 1024  # query rows per nearest-neighbour block; memory grows with chunk x n_train x 8 bytes
    embedding_samples: int = 300  # series per source in the PCA and t-SNE plot
    tsne_perplexity: float = 30.0
    seed_offset: int = 5  # added to the top-level seed; preprocess to generate use offsets 0 to 4


BASELINE_METHODS = ("classifier_guidance", "ros", "smote", "timevae", "timegan")


@dataclass(frozen=True)
class TimeVAEConfig:
    """TimeVAE (Desai et al., 2021), one model per class; paper values in the ``paper`` profile."""

    latent_dim: int = 8
    hidden_sizes: tuple[int, ...] = (50, 100, 200)  # filters of the encoder's stride-2 convolutions
    trend_poly: int = 2  # polynomial trend terms t, t^2, ...; 0 drops the trend block
    # (num_seasons, steps_per_season) per seasonal block, e.g. [[4, 6]] for four 6-hour seasons in a day.
    seasons: tuple[tuple[int, ...], ...] = ()
    use_residual: bool = True  # the convolutional residual block of the decoder
    reconstruction_weight: float = 3.0
    lr: float = 1e-3
    batch_size: int = 64
    epochs: int = 40
    lr_patience: int = 30  # epochs without improvement before the learning rate halves
    early_stopping_patience: int = 50  # epochs without improvement before training stops
    early_stopping_min_delta: float = 6.25e-4  # per-sample loss improvement that counts


@dataclass(frozen=True)
class TimeGANConfig:
    """TimeGAN (Yoon et al., 2019), one model per class; paper values in the ``paper`` profile."""

    hidden_dim: int = 24
    num_layers: int = 3  # GRU layers of embedder, recovery, generator, discriminator; the supervisor has one fewer
    batch_size: int = 128
    lr: float = 1e-3
    embedding_iterations: int = 200  # phase 1: embedder and recovery as an autoencoder
    supervised_iterations: int = 100  # phase 2: supervisor on next-step embeddings
    joint_iterations: int = 250  # phase 3: adversarial, supervised and moment losses together
    gamma: float = 1.0  # weight of the adversarial terms on the generator's unsupervised embeddings
    discriminator_threshold: float = 0.15  # the discriminator updates only while its loss exceeds this


@dataclass(frozen=True)
class ClassifierGuidanceConfig:
    guidance_scale: float = 1.0  # x_{t-1} += guidance_scale * grad_x log p(y | x)


@dataclass(frozen=True)
class SmoteConfig:
    k_neighbors: int = 5


@dataclass(frozen=True)
class BaselinesConfig:
    """Baseline generators of the baselines stage, each writing a set with the training split's label counts."""

    methods: tuple[str, ...] = BASELINE_METHODS
    classifier_guidance: ClassifierGuidanceConfig = field(default_factory=ClassifierGuidanceConfig)
    smote: SmoteConfig = field(default_factory=SmoteConfig)
    timevae: TimeVAEConfig = field(default_factory=TimeVAEConfig)
    timegan: TimeGANConfig = field(default_factory=TimeGANConfig)


@dataclass(frozen=True)
class Params:
    """All stage parameters after the active profile has been merged in."""

    seed: int = 0
    profile: str = "cpu"
    cohort: str = "physionet2012"
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    ihvp: IhvpConfig = field(default_factory=IhvpConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)


_CHOICES = {
    ("data", "normaliser"): ("zscore", "pit"),
    ("data", "time_unit"): ("hours", "minutes", "datetime"),
    ("diffusion", "loss"): ("l1", "l2"),
    ("ihvp", "method"): ("grad_dot", "grad_cos", "cg", "gauss_newton", "lissa", "last_layer", "arnoldi"),
    ("ihvp", "guide_class"): ("all", "0", "1"),
    ("generate", "gradient_at"): ("pred_x0", "x_t"),
    ("generate", "guidance_gradient"): ("double_backward", "finite_difference"),
    ("generate", "score"): ("auto", "dot", "cos", "logit"),
    ("evaluate", "evaluators"): EVALUATOR_NAMES,
    ("fidelity", "holdout"): ("val", "test"),
    (None, "device"): ("auto", "cpu", "cuda"),
    ("baselines", "methods"): BASELINE_METHODS,
}


def deep_merge(base: dict, override: dict) -> dict:
    """Return ``base`` with ``override`` merged in; nested mappings merge, other values replace."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is ChannelSpec:
        return _channel_from_dict(value, where)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where} is {value}; use a finite number")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def _channel_from_dict(raw: Any, where: str) -> ChannelSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping with name, sources, unit, valid_range")
    missing = {"name", "sources", "unit", "valid_range"} - raw.keys()
    unknown = raw.keys() - {"name", "sources", "unit", "valid_range", "aggregate"}
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {sorted(unknown)}")
    if missing:
        raise ConfigError(f"{where} is missing {sorted(missing)}")
    bounds = raw["valid_range"]
    if (not isinstance(bounds, (list, tuple)) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)):
        raise ConfigError(f"{where}.valid_range must be two numbers [min, max], got {bounds!r}")
    low, high = bounds
    if low > high:
        raise ConfigError(f"{where}.valid_range is [{low}, {high}]; the minimum must not exceed the maximum")
    sources = raw["sources"]
    if isinstance(sources, str) or not sources:
        raise ConfigError(f"{where}.sources must be a non-empty list of variable names, got {sources!r}")
    aggregate = str(raw.get("aggregate", "mean"))
    if aggregate not in ("mean", "sum"):
        raise ConfigError(f"{where}.aggregate is {aggregate!r}; choose 'mean' or 'sum'")
    return ChannelSpec(
        str(raw["name"]), tuple(str(s) for s in sources), str(raw["unit"]), float(low), float(high), aggregate
    )


def _section_from_dict(cls: type, raw: Any, section: str, source: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"section '{section}' in {source} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(
            f"unknown key(s) {sorted(unknown)} in section '{section}' of {source}; valid keys: {sorted(names)}"
        )
    values = {}
    for key, value in raw.items():
        where = f"{section}.{key} in {source}"
        if dataclasses.is_dataclass(hints[key]):
            values[key] = _section_from_dict(hints[key], value, f"{section}.{key}", source)
            continue
        values[key] = _coerce(value, hints[key], where)
        allowed = _CHOICES.get((section, key))
        if allowed is None:
            continue
        if isinstance(values[key], tuple):
            invalid = [item for item in values[key] if item not in allowed]
            if invalid:
                raise ConfigError(f"{where} is {list(values[key])}; invalid: {invalid}; choose from {list(allowed)}")
        elif values[key] not in allowed:
            raise ConfigError(f"{where} is {values[key]!r}; choose one of {list(allowed)}")
    return cls(**values)


def params_from_dict(
    raw: dict, source: str = "params.yaml", profile: str | None = None, cohort: str | None = None
) -> Params:
    """Build :class:`Params` from a parsed ``params.yaml``: base sections, then the cohort's, then the profile's."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping of sections, got {type(raw).__name__}")
    raw = dict(raw)
    raw = _merge_cohort(raw, source, cohort)
    profiles = raw.pop("profiles", {}) or {}
    if not isinstance(profiles, dict) or not all(isinstance(v, (dict, type(None))) for v in profiles.values()):
        raise ConfigError(f"'profiles' in {source} must map each profile name to a mapping of overrides")
    name = profile if profile is not None else raw.get("profile", "cpu")
    if name not in profiles:
        raise ConfigError(f"profile {name!r} is not defined under 'profiles' in {source}; defined: {sorted(profiles)}")
    overrides = profiles[name] or {}
    if "dir" in (overrides.get("data") or {}):
        raise ConfigError(
            f"profile {name!r} in {source} sets data.dir; set it in the base 'data' section instead, "
            "because dvc.yaml reads it from there to track the raw files"
        )
    merged = deep_merge(raw, overrides)
    merged["profile"] = name

    sections = {f.name: f.type for f in dataclasses.fields(Params)}
    hints = typing.get_type_hints(Params)
    unknown = set(merged) - set(sections)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {sorted(unknown)} in {source}; valid keys: {sorted(sections)}")
    values: dict[str, Any] = {}
    for key, value in merged.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _section_from_dict(hint, value, key, source)
        else:
            values[key] = _coerce(value, hint, f"{key} in {source}")
            allowed = _CHOICES.get((None, key))
            if allowed is not None and values[key] not in allowed:
                raise ConfigError(f"{key} in {source} is {values[key]!r}; choose one of {list(allowed)}")
    params = Params(**values)
    _check_consistency(params, source)
    return params


def cohort_names(raw: dict, source: str = "params.yaml") -> list[str]:
    """Return the cohort names defined under ``cohorts`` in a parsed ``params.yaml``, in file order."""
    cohorts = raw.get("cohorts")
    if cohorts is None:
        return [str(raw.get("cohort", (raw.get("data") or {}).get("dataset", "physionet2012")))]
    if not isinstance(cohorts, dict) or not cohorts:
        raise ConfigError(f"'cohorts' in {source} must map each cohort name to a mapping of overrides")
    return [str(name) for name in cohorts]


def _merge_cohort(raw: dict, source: str, cohort: str | None) -> dict:
    cohorts = raw.pop("cohorts", None)
    name = cohort if cohort is not None else raw.get("cohort")
    if cohorts is None:
        raw["cohort"] = str(name if name is not None else (raw.get("data") or {}).get("dataset", "physionet2012"))
        return raw
    names = cohort_names({"cohorts": cohorts}, source)
    if name is None:
        raise ConfigError(f"{source} defines cohorts {names} but no 'cohort' key selects one; add one")
    name = str(name)

    if name not in cohorts:
        raise ConfigError(f"cohort {name!r} is not defined under 'cohorts' in {source}; defined: {names}")
    for candidate in names:
        if not _COHORT_NAME.fullmatch(candidate):
            raise ConfigError(
                f"cohort name {candidate!r} in {source} must use letters, digits and underscores only, because it "
                "names output folders and DVC stages"
            )

    overrides = cohorts[name] or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"cohorts.{name} in {source} must be a mapping of section overrides, got {overrides!r}")
    if "profiles" in overrides or "cohorts" in overrides:
        raise ConfigError(f"cohorts.{name} in {source} may override sections only, not 'profiles' or 'cohorts'")
    missing = [key for key in ("dataset", "dir") if key not in (overrides.get("data") or {})]
    if missing:
        raise ConfigError(
            f"cohorts.{name} in {source} does not set data.{' and data.'.join(missing)}; every cohort names its "
            "reader and its data folder, which dvc.yaml tracks"
        )

    merged = deep_merge(raw, overrides)
    merged["cohort"] = name
    return merged


_COHORT_NAME = re.compile(r"[A-Za-z0-9_]+")


def _check_consistency(params: Params, source: str) -> None:
    data = params.data
    total = data.split_train + data.split_val + data.split_test
    if abs(total - 1.0) > 1e-6 or min(data.split_train, data.split_val, data.split_test) <= 0:
        raise ConfigError(f"data.split_* in {source} must be positive and sum to 1, got {total}")
    if not data.channels:
        raise ConfigError(f"data.channels in {source} is empty; list at least one channel")
    depth = len(params.diffusion.channel_mult) - 1
    if data.hours % (2**depth) != 0:
        raise ConfigError(
            f"data.hours={data.hours} must be divisible by 2**{depth} because the U-Net downsamples "
            f"{depth} times (diffusion.channel_mult in {source}); change one of them"
        )
    positive = {
        "diffusion.timesteps": params.diffusion.timesteps, "diffusion.train_steps": params.diffusion.train_steps,
        "diffusion.batch_size": params.diffusion.batch_size, "diffusion.checkpoint_every": params.diffusion.checkpoint_every,
        "diffusion.lr": params.diffusion.lr, "diffusion.base_channels": params.diffusion.base_channels,
        "classifier.hidden_size": params.classifier.hidden_size, "classifier.num_layers": params.classifier.num_layers,
        "classifier.batch_size": params.classifier.batch_size, "classifier.epochs": params.classifier.epochs,
        "classifier.lr": params.classifier.lr, "ihvp.hessian_samples": params.ihvp.hessian_samples,
        "generate.sampling_steps": params.generate.sampling_steps, "generate.batch_size": params.generate.batch_size,
        "evaluate.hidden_size": params.evaluate.hidden_size, "evaluate.num_layers": params.evaluate.num_layers,
        "evaluate.batch_size": params.evaluate.batch_size, "evaluate.epochs": params.evaluate.epochs,
        "evaluate.lr": params.evaluate.lr, "data.hours": data.hours,
        "evaluate.bootstrap_replicates": params.evaluate.bootstrap_replicates,
        "evaluate.timesnet_d_model": params.evaluate.timesnet_d_model,
        "evaluate.timesnet_d_ff": params.evaluate.timesnet_d_ff,
        "evaluate.timesnet_top_k": params.evaluate.timesnet_top_k,
        "evaluate.timesnet_num_kernels": params.evaluate.timesnet_num_kernels,
        "evaluate.timesnet_e_layers": params.evaluate.timesnet_e_layers,
        "evaluate.timesnet_lr": params.evaluate.timesnet_lr,
        "evaluate.timesnet_batch_size": params.evaluate.timesnet_batch_size,
        "evaluate.timesnet_epochs": params.evaluate.timesnet_epochs,
        "evaluate.gbt_max_iter": params.evaluate.gbt_max_iter,
        "evaluate.gbt_learning_rate": params.evaluate.gbt_learning_rate,
        "evaluate.logreg_c": params.evaluate.logreg_c,
        "diffusion.num_heads": params.diffusion.num_heads, "diffusion.beta_start": params.diffusion.beta_start,
        "ihvp.max_iter": params.ihvp.max_iter, "ihvp.tol": params.ihvp.tol,
    }

    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key} in {source} is {value}; it must be positive")
    not_negative = {
        "seed": params.seed, "diffusion.warmup_steps": params.diffusion.warmup_steps,
        "diffusion.weight_decay": params.diffusion.weight_decay, "generate.eta": params.generate.eta,
        "evaluate.bootstrap_seed": params.evaluate.bootstrap_seed,
        **{f"evaluate.seeds[{i}]": seed for i, seed in enumerate(params.evaluate.seeds)},
    }
    for key, value in not_negative.items():
        if value < 0:
            raise ConfigError(f"{key} in {source} is {value}; it must not be negative")
    for key, value in (("diffusion.dropout", params.diffusion.dropout), ("classifier.dropout", params.classifier.dropout),
                       ("diffusion.ema_decay", params.diffusion.ema_decay)):
        if not 0 <= value < 1:
            raise ConfigError(f"{key} in {source} is {value}; it must be in [0, 1)")
    if not params.diffusion.beta_start < params.diffusion.beta_end < 1:
        raise ConfigError(
            f"diffusion.beta_start={params.diffusion.beta_start} and beta_end={params.diffusion.beta_end} in {source} "
            "must satisfy 0 < beta_start < beta_end < 1"
        )
    if params.evaluate.bootstrap_replicates < 2:
        raise ConfigError(
            f"evaluate.bootstrap_replicates in {source} is {params.evaluate.bootstrap_replicates}; an interval needs "
            "at least 2 replicates (1000 is usual)"
        )
    if data.max_stays is not None and data.max_stays <= 0:
        raise ConfigError(f"data.max_stays in {source} is {data.max_stays}; use a positive count or null for all")
    if params.ihvp.damping < 0:
        raise ConfigError(f"ihvp.damping in {source} is {params.ihvp.damping}; it must not be negative")
    for mult in params.diffusion.channel_mult:
        if (params.diffusion.base_channels * mult) % params.diffusion.num_heads:
            raise ConfigError(
                f"diffusion.num_heads={params.diffusion.num_heads} in {source} must divide every level width "
                f"(base_channels x channel_mult = {params.diffusion.base_channels * mult})"
            )

    _check_evaluate(params, source)
    if params.generate.sampling_steps > params.diffusion.timesteps:
        raise ConfigError(f"generate.sampling_steps must not exceed diffusion.timesteps in {source}")
    _check_fidelity(params.fidelity, data.hours, source)
    _check_baselines(params.baselines, source)


def _check_baselines(config: BaselinesConfig, source: str) -> None:
    if not config.methods:
        raise ConfigError(f"baselines.methods in {source} is empty; list at least one of {list(BASELINE_METHODS)}")
    if len(set(config.methods)) != len(config.methods):
        raise ConfigError(f"baselines.methods in {source} lists a method twice: {list(config.methods)}")
    vae, gan = config.timevae, config.timegan
    positive = {
        "baselines.smote.k_neighbors": config.smote.k_neighbors,
        "baselines.timevae.latent_dim": vae.latent_dim, "baselines.timevae.reconstruction_weight": vae.reconstruction_weight,
        "baselines.timevae.lr": vae.lr, "baselines.timevae.batch_size": vae.batch_size,
        "baselines.timevae.epochs": vae.epochs, "baselines.timevae.lr_patience": vae.lr_patience,
        "baselines.timevae.early_stopping_patience": vae.early_stopping_patience,
        "baselines.timegan.hidden_dim": gan.hidden_dim, "baselines.timegan.batch_size": gan.batch_size,
        "baselines.timegan.lr": gan.lr, "baselines.timegan.embedding_iterations": gan.embedding_iterations,
        "baselines.timegan.supervised_iterations": gan.supervised_iterations,
        "baselines.timegan.joint_iterations": gan.joint_iterations,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} in {source} is {value}; it must be positive")
    if not vae.hidden_sizes or min(vae.hidden_sizes) <= 0:
        raise ConfigError(
            f"baselines.timevae.hidden_sizes in {source} is {list(vae.hidden_sizes)}; list at least one positive width"
        )
    if vae.trend_poly < 0:
        raise ConfigError(f"baselines.timevae.trend_poly in {source} is {vae.trend_poly}; use 0 (no trend) or more")
    for season in vae.seasons:
        if len(season) != 2 or min(season) <= 0:
            raise ConfigError(
                f"baselines.timevae.seasons in {source} contains {list(season)}; each entry must be two positive "
                "integers [num_seasons, steps_per_season]"
            )
    if gan.num_layers < 2:
        raise ConfigError(
            f"baselines.timegan.num_layers in {source} is {gan.num_layers}; TimeGAN needs at least 2 because "
            "its supervisor has one layer fewer than the other networks"
        )


def _check_fidelity(config: FidelityConfig, hours: int, source: str) -> None:
    positive = {
        "discriminator_hidden_size": config.discriminator_hidden_size,
        "discriminator_num_layers": config.discriminator_num_layers,
        "discriminator_epochs": config.discriminator_epochs,
        "predictor_hidden_size": config.predictor_hidden_size,
        "predictor_num_layers": config.predictor_num_layers,
        "predictor_epochs": config.predictor_epochs,
        "batch_size": config.batch_size, "lr": config.lr, "max_samples": config.max_samples,
        "distance_chunk": config.distance_chunk, "tsne_perplexity": config.tsne_perplexity,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"fidelity.{key} in {source} is {value}; it must be positive")
    if config.mmd_max_samples < 2 or config.embedding_samples < 2:
        raise ConfigError(
            f"fidelity.mmd_max_samples ({config.mmd_max_samples}) and fidelity.embedding_samples "
            f"({config.embedding_samples}) in {source} must be at least 2"
        )
    if not 0 < config.test_fraction < 1:
        raise ConfigError(f"fidelity.test_fraction in {source} is {config.test_fraction}; use a fraction in (0, 1)")
    if not 1 <= config.acf_max_lag < hours:
        raise ConfigError(
            f"fidelity.acf_max_lag in {source} is {config.acf_max_lag}; use 1 to {hours - 1}, "
            f"below the series length data.hours={hours}"
        )
    if config.copy_tolerance < 0:
        raise ConfigError(f"fidelity.copy_tolerance in {source} is {config.copy_tolerance}; it must not be negative")


def _check_evaluate(params: Params, source: str) -> None:
    config = params.evaluate
    if not config.seeds:
        raise ConfigError(f"evaluate.seeds in {source} is empty; list at least one seed")
    if len(set(config.seeds)) != len(config.seeds):
        raise ConfigError(f"evaluate.seeds in {source} is {list(config.seeds)}; list each seed once")
    if config.workers < 1:
        raise ConfigError(f"evaluate.workers in {source} is {config.workers}; use 1 or more processes")
    if not config.evaluators:
        raise ConfigError(f"evaluate.evaluators in {source} is empty; choose from {list(EVALUATOR_NAMES)}")
    if len(set(config.evaluators)) != len(config.evaluators):
        raise ConfigError(f"evaluate.evaluators in {source} is {list(config.evaluators)}; list each evaluator once")
    if not all(0 < alpha <= 1 for alpha in config.alphas):
        raise ConfigError(
            f"evaluate.alphas in {source} is {list(config.alphas)}; each must be in (0, 1], "
            "because the synthetic set is as large as the real training split"
        )
    unknown = [name for name in config.baselines if name not in params.baselines.methods]
    if unknown:
        raise ConfigError(
            f"evaluate.baselines in {source} lists {unknown}, which baselines.methods {list(params.baselines.methods)} "
            "does not generate; add them there or remove them here"
        )
    if config.paired_baseline == "real":
        raise ConfigError(
            f"evaluate.paired_baseline in {source} is 'real', which has TRTR only; name a synthetic source such as "
            "'unguided'"
        )
    if config.timesnet_top_k > params.data.hours // 2:
        raise ConfigError(
            f"evaluate.timesnet_top_k={config.timesnet_top_k} in {source} exceeds data.hours // 2 = "
            f"{params.data.hours // 2}, the number of non-zero FFT frequencies; lower it"
        )
    for key in ("dropout", "timesnet_dropout"):
        if not 0 <= getattr(config, key) < 1:
            raise ConfigError(f"evaluate.{key} in {source} is {getattr(config, key)}; it must be in [0, 1)")
    if not 0 < config.gbt_max_features <= 1:
        raise ConfigError(f"evaluate.gbt_max_features in {source} is {config.gbt_max_features}; it must be in (0, 1]")


def read_params_file(path: str | Path = "params.yaml") -> dict:
    """Parse ``params.yaml`` into a mapping, with a ConfigError naming the file when that fails."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} not found; run from the project root, which holds params.yaml")
    try:
        with path.open() as handle:
            raw = yaml.safe_load(handle) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"parameter file {path} is not valid YAML: {exc}") from exc
    return raw


def load_params(path: str | Path = "params.yaml", profile: str | None = None, cohort: str | None = None) -> Params:
    """Read ``params.yaml`` and return the parameters of the active (or given) profile and cohort."""
    return params_from_dict(read_params_file(path), str(path), profile, cohort)


def to_flat_dict(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a dataclass into dotted keys, as MLflow parameters."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(to_flat_dict(value, key + "."))
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            out[key] = ",".join(getattr(v, "name", str(v)) for v in value)
        else:
            out[key] = value
    return out
