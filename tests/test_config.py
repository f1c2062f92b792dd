import re
import subprocess
from pathlib import Path

import pytest
import yaml

from avlib.config import ConfigError, ModelConfig, Params, from_dict, load_config, load_params, save_config


REPO = Path(__file__).resolve().parents[1]


def committed_params(tmp_path) -> Path:
    """params.yaml as committed: the working tree's may have been switched (`make repro PROFILE=smoke`)."""
    text = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repository_params_load(tmp_path):
    params = load_params(committed_params(tmp_path))
    assert params.profile == "tiny"
    assert params.model.projector == "mlp2x_gelu"
    assert params.model.audio.window_seconds == 4.0


def test_unknown_key_names_path_and_nearest_key():
    with pytest.raises(ConfigError, match=r"model\.audio\.num_audio_token'.*did you mean 'num_audio_tokens'"):
        from_dict(Params, {"model": {"audio": {"num_audio_token": 8}}})


def test_unknown_key_without_near_match_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown parameter 'zzz'.*valid keys: profile, seed"):
        from_dict(Params, {"zzz": 1})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model": {"audio": {"window_seconds": "four"}}}, r"model\.audio\.window_seconds: expected float, got str"),
        ({"seed": True}, r"seed: expected int, got bool"),
        ({"seed": 1.5}, r"seed: expected int, got float"),
        ({"model": {"projector": "mlp3x"}}, r"model\.projector: 'mlp3x' is not one of \['mlp2x_gelu', 'linear'\]"),
        ({"model": {"media_order": "both"}}, r"model\.media_order: 'both' is not one of \['video_first', 'audio_first'\]"),
        ({"finetune": {"lora": {"target_modules": "q_proj"}}}, r"finetune\.lora\.target_modules: expected a list"),
        ({"finetune": {"lora": {"target_modules": ["q_proj", 3]}}}, r"target_modules\[1\]: expected str"),
        ({"model": 3}, r"model: expected a mapping"),
    ],
)
def test_wrong_types_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Params, data)


def test_int_is_accepted_for_float():
    assert from_dict(Params, {"model": {"audio": {"window_seconds": 30}}}).model.audio.window_seconds == 30.0


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such parameter file"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("model:\n  audoi: {}\n")
    with pytest.raises(ConfigError, match=r"params.yaml: unknown parameter 'model.audoi'; did you mean 'audio'"):
        load_params(bad)


def test_saved_config_round_trips(tmp_path):
    config = from_dict(ModelConfig, {"builder": "paper", "audio": {"num_audio_tokens": 16}})
    path = save_config(config, tmp_path / "run")
    assert path.name == "config.yaml"
    assert load_config(ModelConfig, path) == config


def test_params_yaml_is_the_tiny_profile(tmp_path):
    from avlib.config import profile_params

    _, tiny = profile_params("tiny")
    assert load_params(committed_params(tmp_path)) == tiny


@pytest.mark.parametrize("name", ["smoke", "paper"])
def test_profiles_switch_and_validate(name, tmp_path):
    from avlib.config import use_profile

    params = use_profile(name, tmp_path / "params.yaml")
    assert params.profile == name and load_params(tmp_path / "params.yaml") == params
    if name == "paper":
        assert params.model.builder == "paper" and params.model.audio.window_seconds == 30.0
        assert params.model.vision.num_frames == 100 and params.model.audio.num_audio_tokens == 64


def test_profile_with_a_typo_is_rejected(tmp_path):
    from avlib.config import use_profile

    (tmp_path / "tiny.yaml").write_text("# base\nseed: 0\n")
    (tmp_path / "odd.yaml").write_text("sed: 1\n")
    with pytest.raises(ConfigError, match=r"profiles/odd.yaml: unknown parameter 'sed'; did you mean 'seed'"):
        use_profile("odd", tmp_path / "params.yaml", profiles=tmp_path)
    with pytest.raises(ConfigError, match="unknown profile 'huge'; available: odd, tiny"):
        use_profile("huge", tmp_path / "params.yaml", profiles=tmp_path)


@pytest.mark.parametrize(
    "edit, message",
    [("finetune.steps: -5", "finetune.steps: must be at least 1, got -5"),
     ("model.vision.num_frames: 0", "model.vision.num_frames: must be at least 1, got 0"),
     ("finetune.batch_size: 0", "finetune.batch_size: must be at least 1"),
     ("finetune.grad_accum: 0", "finetune.grad_accum: must be at least 1"),
     ("pretrain.audio.checkpoint_every: 0", "pretrain.audio.checkpoint_every: must be at least 1"),
     ("finetune.lr: .nan", "finetune.lr: must be a finite number"),
     ("finetune.lr: 0.0", "finetune.lr: must be greater than 0"),
     ("evaluate.temperature: .nan", "evaluate.temperature: must be a finite number"),
     ("evaluate.temperature: -1.0", "evaluate.temperature: must be at least 0"),
     ("model.audio.window_seconds: 0.0", "model.audio.window_seconds: must be greater than 0"),
     ("model.tiny.llm_rope_theta: 0.0", "model.tiny.llm_rope_theta: must be greater than 0"),
     ("finetune.lora.dropout: 1.5", "finetune.lora.dropout: must be from 0 to below 1"),
     ("finetune.kind_repeats.background: 0", "finetune.kind_repeats.background: must be at least 1, got 0"),
     ("finetune.kind_repeats.background: 1.5", "finetune.kind_repeats.background: expected int, got float 1.5"),
     ("finetune.kind_repeats: 2", "finetune.kind_repeats: expected a mapping, got 2"),
     ("finetune.lr: 3e-3", "YAML reads 3e-3 as text: write it with a decimal point, e.g. 3.0e-3")],
)
def test_values_out_of_range_are_refused_naming_key_and_value(tmp_path, edit, message):
    from avlib.config import ConfigError, deep_merge, load_params, profile_params

    data, _ = profile_params("tiny")
    key, value = edit.split(": ")
    override: dict = {}
    node = override
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value) if value != "3e-3" else "3e-3"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(deep_merge(data, override)))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_params(path)


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    from avlib.config import ConfigError, load_params

    path = tmp_path / "params.yaml"
    path.write_text("profile: tiny\nfinetune:\n\tsteps: 10\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:3:1: not valid YAML") + ".*never tabs"):
        load_params(path)


def test_a_misspelt_lora_target_is_refused_with_the_valid_names(make_model):
    from avlib.config import LoraConfig

    with pytest.raises(ValueError, match=r"names \['qproj'\], which the LLM does not have; its linear layers are \[.*'q_proj'"):
        make_model().configure_training("finetune", LoraConfig(rank=4, alpha=8, target_modules=["qproj", "v_proj"]))
