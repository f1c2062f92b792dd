import pytest

from avlib.config import ConfigError, ModelConfig, Params, from_dict, load_config, load_params, save_config


def test_repository_params_load():
    params = load_params("params.yaml")
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
