"""params.yaml parsing: profiles merge, and invalid values raise errors that name the key."""

import pytest
import yaml

from tardiff.config import ConfigError, load_params, params_from_dict
from tardiff.errors import TardiffInputError
from tests.stage_project import PROJECT_ROOT


@pytest.fixture
def raw():
    """Return the project's params.yaml with the cpu profile active, whichever profile the working copy selects."""
    parsed = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    parsed["profile"] = "cpu"
    return parsed


def test_every_profile_loads():
    for profile in ("cpu", "paper", "tiny"):
        params = load_params(PROJECT_ROOT / "params.yaml", profile=profile)
        assert params.profile == profile
        assert len(params.data.channels) == 7


def test_profile_overrides_only_its_keys():
    cpu = load_params(PROJECT_ROOT / "params.yaml", profile="cpu")
    paper = load_params(PROJECT_ROOT / "params.yaml", profile="paper")
    assert paper.diffusion.base_channels == 64
    assert paper.diffusion.channel_mult == (1, 2, 4, 4)
    assert paper.diffusion.train_steps == 20000
    assert paper.diffusion.timesteps == cpu.diffusion.timesteps
    assert paper.data == cpu.data


def test_unknown_key_names_section_and_key(raw):
    raw["diffusion"]["learning_rate"] = 1e-3
    with pytest.raises(ConfigError, match=r"learning_rate.*diffusion"):
        params_from_dict(raw)


def test_invalid_choice_lists_valid_ones(raw):
    raw["ihvp"]["method"] = "newton"
    with pytest.raises(ConfigError, match=r"ihvp.method.*'newton'.*grad_dot"):
        params_from_dict(raw)


def test_wrong_type_is_rejected(raw):
    raw["diffusion"]["train_steps"] = "many"
    with pytest.raises(ConfigError, match="diffusion.train_steps.*integer"):
        params_from_dict(raw)


def test_missing_profile_is_rejected(raw):
    raw["profile"] = "gpu"
    with pytest.raises(ConfigError, match="profile 'gpu' is not defined"):
        params_from_dict(raw)


def test_profile_may_not_move_data_dir(raw):
    raw["profiles"]["tiny"]["data"]["dir"] = "/elsewhere"
    with pytest.raises(ConfigError, match="sets data.dir"):
        params_from_dict(raw, profile="tiny")


def test_hours_must_fit_unet_downsampling(raw):
    raw["data"]["hours"] = 10
    with pytest.raises(ConfigError, match="divisible by 2\\*\\*2"):
        params_from_dict(raw)


def test_config_error_is_an_input_error():
    assert issubclass(ConfigError, TardiffInputError)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_every_cohort_loads_with_its_reader_and_folder(raw):
    from tardiff.config import cohort_names

    names = cohort_names(raw)
    assert names[0] == "physionet2012"
    for name in names:
        params = params_from_dict(raw, cohort=name)
        assert params.cohort == name
        assert params.data.dir == raw["cohorts"][name]["data"]["dir"]
        assert params.data.channels


def test_cohort_overrides_come_before_the_profile(raw):
    raw["cohorts"]["physionet2012"]["data"]["max_stays"] = 900
    raw["cohorts"]["physionet2012"]["diffusion"] = {"train_steps": 123}
    cpu = params_from_dict(raw, profile="cpu")
    assert cpu.data.max_stays == 900
    assert cpu.diffusion.train_steps == 123
    tiny = params_from_dict(raw, profile="tiny")
    assert tiny.data.max_stays == raw["profiles"]["tiny"]["data"]["max_stays"]
    assert tiny.diffusion.train_steps == raw["profiles"]["tiny"]["diffusion"]["train_steps"]


def test_unknown_cohort_lists_the_defined_ones(raw):
    with pytest.raises(ConfigError, match=r"cohort 'nowhere' is not defined.*physionet2012"):
        params_from_dict(raw, cohort="nowhere")


def test_cohort_must_name_reader_and_folder(raw):
    del raw["cohorts"]["physionet2012"]["data"]["dir"]
    with pytest.raises(ConfigError, match="does not set data.dir"):
        params_from_dict(raw)


def test_cohort_name_must_suit_folders_and_stage_names(raw):
    raw["cohorts"]["my@cohort"] = raw["cohorts"]["physionet2012"]
    with pytest.raises(ConfigError, match="letters, digits and underscores"):
        params_from_dict(raw)


def test_fidelity_section_is_validated(raw):
    cases = {
        ("holdout", "train"): r"fidelity.holdout.*'train'.*'val'",
        ("acf_max_lag", 24): r"fidelity.acf_max_lag.*24.*below the series length",
        ("test_fraction", 1.0): "fidelity.test_fraction",
        ("discriminator_epochs", 0): "fidelity.discriminator_epochs",
        ("copy_tolerance", -0.1): "fidelity.copy_tolerance",
    }
    for (key, value), message in cases.items():
        changed = yaml.safe_load(yaml.safe_dump(raw))
        changed["fidelity"][key] = value
        with pytest.raises(ConfigError, match=message):
            params_from_dict(changed)


def test_tiny_profile_shrinks_fidelity(raw):
    tiny = params_from_dict(raw, profile="tiny").fidelity
    cpu = params_from_dict(raw, profile="cpu").fidelity
    assert tiny.max_samples < cpu.max_samples
    assert tiny.discriminator_epochs < cpu.discriminator_epochs
    assert tiny.holdout == cpu.holdout == "test"


@pytest.mark.parametrize(
    ("section", "key", "value", "match"),
    [
        ("generate", "guidance_scale", float("nan"), r"generate.guidance_scale.*finite"),
        ("generate", "guidance_scale", float("inf"), r"generate.guidance_scale.*finite"),
        ("diffusion", "lr", float("nan"), r"diffusion.lr.*finite"),
        ("ihvp", "damping", float("nan"), r"ihvp.damping.*finite"),
        ("diffusion", "num_heads", 0, r"diffusion.num_heads.*positive"),
        ("diffusion", "dropout", 1.5, r"diffusion.dropout.*\[0, 1\)"),
        ("diffusion", "ema_decay", 1.5, r"diffusion.ema_decay.*\[0, 1\)"),
        ("diffusion", "beta_end", -0.1, r"beta_start < beta_end"),
        ("diffusion", "warmup_steps", -5, r"diffusion.warmup_steps.*not be negative"),
        ("generate", "eta", -1.0, r"generate.eta.*not be negative"),
        ("ihvp", "max_iter", 0, r"ihvp.max_iter.*positive"),
        ("ihvp", "tol", -1.0, r"ihvp.tol.*positive"),
        ("evaluate", "seeds", [-1], r"evaluate.seeds\[0\].*not be negative"),
        ("evaluate", "bootstrap_replicates", 1, r"bootstrap_replicates.*at least 2"),
    ],
)
def test_out_of_range_value_names_key(raw, section, key, value, match):
    raw[section][key] = value
    with pytest.raises(ConfigError, match=match):
        params_from_dict(raw)


def test_nested_and_top_level_values_are_checked(raw):
    raw["baselines"]["classifier_guidance"]["guidance_scale"] = float("nan")
    with pytest.raises(ConfigError, match=r"guidance_scale.*finite"):
        params_from_dict(raw)
    raw["baselines"]["classifier_guidance"]["guidance_scale"] = 1.0
    raw["seed"] = -1
    with pytest.raises(ConfigError, match=r"seed in params.yaml is -1"):
        params_from_dict(raw)
