"""Typed configuration: `params.yaml` read into dataclasses, one section per stage.

Every value a user can set lives in `params.yaml`; this module is its schema.
Unknown keys and wrong types are rejected with the key path and, for a typo,
the nearest valid key, so a misspelt parameter never silently falls back to a
default. `save_config` writes the resolved configuration beside an artefact.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A parameter in params.yaml is unknown, missing or of the wrong type."""


# --------------------------------------------------------------------------- model


@dataclass
class AudioConfig:
    """How audio becomes tokens (docs/design.md, section 1)."""

    window_seconds: float = 30.0  # Whisper's window; miniature models use shorter ones
    num_audio_tokens: int = 64  # pooled tokens per window
    n_mels: int = 80  # log-mel bins (Whisper small: 80); audio is always 16 kHz, as Whisper's
    max_windows: int = 0  # audio windows per clip the LLM sees; later ones are dropped and counted. 0: all


@dataclass
class VisionConfig:
    """How frames become tokens (docs/design.md, section 1)."""

    num_frames: int = 100  # frames sampled per clip, one per equal segment
    feature_layer: int = -2  # block whose patch tokens are used; -2 = second-to-last


@dataclass
class TinyModelConfig:
    """Sizes of the miniature models built with the paper's classes."""

    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    audio_width: int = 64
    audio_layers: int = 2
    audio_heads: int = 2
    text_width: int = 64  # Whisper decoder and SigLIP text tower width
    text_layers: int = 1
    text_heads: int = 2
    llm_hidden: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    llm_intermediate: int = 256
    llm_max_positions: int = 512
    llm_rope_theta: float = 10000.0  # the miniature Phi's rotary base (phi-2's); a smaller base turns faster with position
    vocab_size: int = 512  # tokenizer size trained on the corpus text
    whisper_text_ctx: int = 32  # the miniature Whisper decoder's longest text


@dataclass
class PaperModelConfig:
    """Pretrained models of the paper profile: local paths, or names to fetch online."""

    whisper: str = "small"  # openai-whisper name, or a local .pt checkpoint
    siglip_model: str = "ViT-SO400M-14-SigLIP-384"  # open_clip architecture name
    siglip_pretrained: str = "webli"  # open_clip pretrained tag, or a local checkpoint file
    llm: str = "microsoft/phi-2"  # hub id, or a local save_pretrained folder
    vision_projector: str = "checkpoints/paper/bunny/mm_projector.bin"  # Bunny's pretrained projector
    cache_dir: str = "checkpoints/paper"  # where downloads go and where to put them by hand


@dataclass
class ModelConfig:
    builder: Literal["tiny", "paper"] = "tiny"
    projector: Literal["mlp2x_gelu", "linear"] = "mlp2x_gelu"
    # tokens per sample, 0: the LLM's positions; text is cut from the end (answer first, then question), media
    # slots never (avlib.template)
    max_length: int = 0
    # the order of the prompt's placeholder lines: video_first (<video>, then <audio>) | audio_first (avlib.template)
    media_order: Literal["video_first", "audio_first"] = "video_first"
    audio: AudioConfig = field(default_factory=AudioConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    paper: PaperModelConfig = field(default_factory=PaperModelConfig)


# ------------------------------------------------------------------------- stages


@dataclass
class WhisperTraining:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    aux_weight: float = 1.0  # auxiliary word/sound/count/order classifiers on the pooled encoder output


@dataclass
class SiglipTraining:
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    frames_per_clip: int = 4  # training frames taken from each training clip
    aux_weight: float = 1.0  # auxiliary shape/colour/background/place classifiers on the per-frame mean of the feature block
    shape_weight: float = 1.0  # the shape classifier's loss weight among them (the place ones weigh 1)
    colour_weight: float = 1.0  # the colour and background classifiers' loss weight among them


@dataclass
class PhiTraining:
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 50
    seq_len: int = 128


@dataclass
class FoundationConfig:
    """Stage 1 (tiny and smoke profiles): training the miniature foundation models."""

    # false: the miniature models stay as initialised (seeded) and only the tokenizer learns, from the
    # corpus text. Their recipes train on the synthetic corpus's labels; prepared real data has none,
    # so paper-smoke, which checks the real data path, uses untrained encoders and says so.
    train: bool = True
    whisper: WhisperTraining = field(default_factory=WhisperTraining)
    siglip: SiglipTraining = field(default_factory=SiglipTraining)
    phi: PhiTraining = field(default_factory=PhiTraining)


@dataclass
class LoraConfig:
    rank: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"])


@dataclass
class TrainingConfig:
    """Hyper-parameters of one run of the training loop (avlib.train)."""

    steps: int = 1000
    batch_size: int = 32  # global: split over processes and accumulation steps
    grad_accum: int = 1
    length_groups: int = 1  # each micro-batch run as this many passes over rows of like length: the same gradient, less padding
    lr: float = 1e-3
    projector_lr: float = 0.0  # the projectors' own learning rate (Bunny's mm_projector_lr); 0: lr
    audio_projector_lr: float = 0.0  # the audio projector's own learning rate; 0: projector_lr
    warmup: int = 50
    min_lr_ratio: float = 0.0  # the cosine decays to this fraction of lr
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 10
    gradient_checkpointing: bool = False


@dataclass
class PretrainConfig:
    """Stage 2: projector pretraining."""

    audio: TrainingConfig = field(default_factory=TrainingConfig)
    vision: TrainingConfig = field(default_factory=TrainingConfig)
    # false: the visual projector is not pretrained here (paper: Bunny's pretrained projector is loaded
    # instead, model.paper.vision_projector); then no image-caption split is read.
    train_vision_projector: bool = True
    max_speech: int = 0  # speech-to-text examples drawn (seeded) for audio pretraining; 0: all (paper: 50K)
    max_captions: int = 0  # audio-caption examples drawn likewise; 0: all (paper: 50K)


@dataclass
class FinetuneConfig(TrainingConfig):
    """Stages 3 and 4: joint finetuning (and the vision-only twin, identically)."""

    lora: LoraConfig = field(default_factory=LoraConfig)
    # The mix: each training example of a kind named here is drawn this many times per epoch (avlib.stages);
    # kinds not named, once. A kind with no training example must be given 1 (real data has no kinds).
    kind_repeats: dict[str, int] = field(default_factory=dict)


@dataclass
class ChatJudgeConfig:
    """An OpenAI-compatible endpoint; the key comes from the environment variable named here, never from this file."""

    base_url: str = "https://api.openai.com/v1"
    # The benchmark's scripts ask `gpt-3.5-turbo`, an alias that moves between snapshots; pinned to the one it
    # points to now. The published scores (2023) came from earlier, retired snapshots: close, not the same judge.
    model: str = "gpt-3.5-turbo-0125"
    temperature: float | None = None  # None: the API's default, as the benchmark's scripts leave it
    api_key_env: str = "OPENAI_API_KEY"
    price_per_1k_prompt: float = 0.0005
    price_per_1k_completion: float = 0.0015
    timeout: float = 60.0
    max_retries: int = 5


@dataclass
class EvaluateConfig:
    """Stage 5: evaluation."""

    batch_size: int = 64
    max_new_tokens: int = 48
    temperature: float = 0.0  # 0: greedy
    bootstrap_resamples: int = 2000
    judge: Literal["reference", "chat"] = "reference"
    chat: ChatJudgeConfig = field(default_factory=ChatJudgeConfig)
    # Read from data/benchmarks/<name>/. audio_aware: the synthetic one; music_avqa: its real counterpart.
    benchmarks: list[Literal["audio_aware", "music_avqa", "video_chatgpt", "activitynet_qa"]] = field(
        default_factory=lambda: ["audio_aware", "video_chatgpt"])


@dataclass
class CorpusConfig:
    """Which corpus the study reads from data/: a synthetic one (avlib.synth), or prepared real data."""

    profile: str = "tiny"  # tiny | smoke (avlib.synth profiles) | paper (prepared real data)
    seed: int = 0


@dataclass
class RuntimeConfig:
    """How the CPU computes (avlib.runtime): the same bits on other machines, or the fastest kernels."""

    # avx2: the same AVX2 kernels (PyTorch, oneDNN, MKL) on every Intel CPU, so results do not depend
    # on which; MKL ignores its AVX2 branch on other vendors' CPUs (avlib.runtime says so when it runs);
    # compatible: MKL's SSE2 branch, documented the same on Intel and AMD CPUs, slower; native: each
    # library picks the widest its CPU has (AVX-512 ...).
    cpu_kernels: Literal["avx2", "compatible", "native"] = "avx2"
    threads: int = 2  # intra-op CPU threads; reductions split by thread count, so it is pinned too. 0: library default


@dataclass
class Params:
    """The whole of params.yaml."""

    profile: Literal["tiny", "smoke", "paper", "paper-smoke"] = "tiny"
    seed: int = 0
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    foundation: FoundationConfig = field(default_factory=FoundationConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


# ------------------------------------------------------------------------ loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against the annotation `tp`, recursing into dataclasses and lists."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return from_dict(tp, value, path)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{path}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _convert(value, option, path)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: {value!r} matches none of {_type_name(tp)}")
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {_convert(k, key_tp, path): _convert(v, value_tp, f"{path}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        # YAML writes 30 for 30.0; an int is a valid float, a bool is not.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    hint = ""
    if tp is float and isinstance(value, str):
        try:
            float(value)
            hint = f"; YAML reads {value} as text: write it with a decimal point, e.g. {float(value):.1e}".replace("e-0", "e-")
        except ValueError:
            pass
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}{hint}")


# What a value must be, by field name, wherever the field appears (avlib.config is the only place that knows).
_AT_LEAST_ONE = {"steps", "batch_size", "grad_accum", "length_groups", "checkpoint_every", "log_every", "num_frames", "num_audio_tokens", "n_mels",
                 "bootstrap_resamples", "max_new_tokens", "rank", "alpha", "frames_per_clip", "seq_len", "image_size", "patch_size",
                 "vision_width", "vision_layers", "vision_heads", "audio_width", "audio_layers", "audio_heads", "text_width",
                 "text_layers", "text_heads", "llm_hidden", "llm_layers", "llm_heads", "llm_intermediate", "llm_max_positions",
                 "vocab_size", "whisper_text_ctx", "max_retries", "kind_repeats"}
_AT_LEAST_ZERO = {"warmup", "max_windows", "max_length", "threads", "max_speech", "max_captions", "seed"}
_POSITIVE = {"lr", "llm_rope_theta", "window_seconds", "max_grad_norm", "timeout"}
_NOT_NEGATIVE = {"projector_lr", "audio_projector_lr", "weight_decay", "temperature", "aux_weight", "shape_weight", "colour_weight", "price_per_1k_prompt", "price_per_1k_completion"}
_FRACTION = {"dropout", "min_lr_ratio"}


def check_ranges(config: Any, path: str = "") -> None:
    """Raise ConfigError naming the first value out of its range (steps >= 1, learning rates > 0 and finite, ...)."""
    for f in dataclasses.fields(config):
        value, where = getattr(config, f.name), f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(value):
            check_ranges(value, where)
            continue
        if isinstance(value, dict):  # a mapping's rule, by its name, holds for each of its values
            for key, item in value.items():
                _check_range(f.name, item, f"{where}.{key}")
        elif value is not None and not isinstance(value, (str, list, bool)):
            _check_range(f.name, value, where)


def _check_range(name: str, value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value}")
    rule = ("at least 1", value >= 1) if name in _AT_LEAST_ONE else ("at least 0", value >= 0) if name in _AT_LEAST_ZERO \
        else ("greater than 0", value > 0) if name in _POSITIVE else ("at least 0", value >= 0) if name in _NOT_NEGATIVE \
        else ("from 0 to below 1", 0 <= value < 1) if name in _FRACTION else None
    if rule is not None and not rule[1]:
        raise ConfigError(f"{where}: must be {rule[0]}, got {value}")


def from_dict(cls: type, data: dict, path: str = "") -> Any:
    """Build dataclass `cls` from a mapping; missing keys take the defaults."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown parameter '{where}'{hint}")
    kwargs = {key: _convert(value, hints[key], f"{path}.{key}" if path else key) for key, value in data.items()}
    return cls(**kwargs)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such parameter file; run from the repository root or pass its path")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        params = from_dict(Params, data)
        check_ranges(params)
        return params
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def read_yaml(path: str | Path) -> Any:
    """A YAML file's data; a syntax error names the file, line and column (tabs, unclosed brackets, ...)."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem}); YAML indents with spaces, never tabs") from None


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def save_config(config: Any, directory: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved configuration beside an artefact; returns the file written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    target.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return target


def load_config(cls: type, path: str | Path) -> Any:
    """Read back a configuration written by `save_config`."""
    return from_dict(cls, yaml.safe_load(Path(path).read_text()) or {})


# ------------------------------------------------------------------- profiles

PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"
PROFILE_HEADER = (
    "# The study's parameters, written by `python -m avlib.config use {name}` from profiles/tiny.yaml{extra}.\n"
    "# Edit here for a one-off run; edit profiles/ to change a profile. avlib.config is the schema.\n"
)


def deep_merge(base: dict, override: dict) -> dict:
    """`base` with `override`'s values in, recursively (the schema then rejects any unknown key)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _profile_data(name: str, profiles: Path, seen: tuple[str, ...] = ()) -> dict:
    """profiles/<name>.yaml merged over what it `extends` (default: tiny, the base of every profile)."""
    available = sorted(p.stem for p in profiles.glob("*.yaml"))
    if name not in available:
        raise ConfigError(f"unknown profile {name!r}; available: {', '.join(available)}")
    if name in seen:
        raise ConfigError(f"profiles/{name}.yaml: extends itself through {' -> '.join(seen)}")
    data = read_yaml(profiles / f"{name}.yaml")
    if name == "tiny":
        return data
    base = data.pop("extends", "tiny")
    return deep_merge(_profile_data(base, profiles, (*seen, name)), data)


def profile_params(name: str, profiles: str | Path = PROFILES_DIR) -> tuple[dict, Params]:
    """The tiny defaults merged with profiles/<name>.yaml's overrides (and those of the profile it extends), validated."""
    data = _profile_data(name, Path(profiles))
    try:
        params = from_dict(Params, data)
        check_ranges(params)
        return data, params
    except ConfigError as err:
        raise ConfigError(f"profiles/{name}.yaml: {err}") from None


def use_profile(name: str, out: str | Path = "params.yaml", profiles: str | Path = PROFILES_DIR) -> Params:
    """Write params.yaml for profile `name`; `dvc params diff` then shows what the switch changed."""
    data, params = profile_params(name, profiles)
    if name == "tiny":  # the base itself: keep its comments
        body = Path(profiles, "tiny.yaml").read_text().split("\n", 1)[1]
        text = PROFILE_HEADER.format(name=name, extra="") + body
    else:
        text = PROFILE_HEADER.format(name=name, extra=f" and profiles/{name}.yaml") + yaml.safe_dump(
            data, sort_keys=False, default_flow_style=None, width=110)
    Path(out).write_text(text)
    return params


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m avlib.config", description="Switch params.yaml to a profile, or check it.")
    commands = parser.add_subparsers(dest="command", required=True)
    use = commands.add_parser("use", help="write params.yaml for a profile (tiny, smoke, paper, paper-smoke)")
    use.add_argument("profile")
    use.add_argument("--out", default="params.yaml")
    check = commands.add_parser("check", help="validate a parameter file")
    check.add_argument("file", nargs="?", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        if args.command == "use":
            params = use_profile(args.profile, args.out)
            print(f"{args.out}: profile {params.profile} (model builder {params.model.builder}, corpus {params.corpus.profile})")
        else:
            load_params(args.file)
            print(f"{args.file}: valid")
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
