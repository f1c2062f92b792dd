"""Shared fixtures: a miniature tokenizer, configuration and model; no downloads."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before any Hugging Face import: never wait on the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch

from avlib.config import AudioConfig, LoraConfig, ModelConfig, TinyModelConfig, VisionConfig
from avlib.builders import build_model
from avlib.tokenizer import train_tokenizer

TEXTS = [
    "the red circle moves to the left",
    "a blue square moves up on a green background",
    "the speaker says the word apple",
    "you can hear three beeps and then a siren",
    "what does the speaker say",
    "how many beeps are there",
    "which shape moves first",
    "describe the video in detail",
] * 20


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=320)


@pytest.fixture
def cfg() -> ModelConfig:
    """Smaller than the tiny profile: 1 s audio windows, 32 px frames, width 32."""
    return ModelConfig(
        audio=AudioConfig(window_seconds=1.0, num_audio_tokens=4),
        vision=VisionConfig(num_frames=2, feature_layer=-2),
        tiny=TinyModelConfig(
            image_size=32, patch_size=8, vision_width=32, vision_layers=3, vision_heads=2,
            audio_width=32, audio_layers=1, audio_heads=2,
            llm_hidden=32, llm_layers=2, llm_heads=2, llm_intermediate=64, llm_max_positions=512,
        ),
    )


@pytest.fixture
def lora() -> LoraConfig:
    return LoraConfig(rank=4, alpha=8, dropout=0.0)


@pytest.fixture
def make_model(cfg, tokenizer):
    def make(seed: int = 0, use_audio: bool = True):
        torch.manual_seed(seed)
        return build_model(cfg, tokenizer, use_audio=use_audio)

    return make


def random_clip(rng: np.random.Generator, frames: int = 2, seconds: float | None = 1.5, size=(40, 48)):
    video = rng.integers(0, 256, (frames, *size, 3), dtype=np.uint8)
    audio = None if seconds is None else rng.standard_normal(int(seconds * 16000)).astype(np.float32) * 0.1
    return video, audio


@pytest.fixture
def samples(make_model):
    """Feature samples of three clips: with audio, without an audio track, with long audio."""
    model = make_model()
    rng = np.random.default_rng(0)
    clips = [random_clip(rng, 2, 1.5), random_clip(rng, 3, None), random_clip(rng, 1, 2.5)]
    videos, audios = model.encode_media([c[0] for c in clips], [c[1] for c in clips])
    qa = [("what does the speaker say", "apple"), ("which shape moves first", "the red circle"), ("how many beeps are there", "three")]
    return [
        {"question": q, "answer": a, "video_features": v, "audio_features": au}
        for (q, a), v, au in zip(qa, videos, audios)
    ]


# ------------------------------------------------- a small corpus and stage 1 on it

SMALL_PARAMS = {
    "profile": "smoke",
    "corpus": {"profile": "small", "seed": 1},
    "model": {
        "audio": {"window_seconds": 4.0, "num_audio_tokens": 8},
        "vision": {"num_frames": 4},
        "tiny": {"image_size": 32, "patch_size": 8, "vision_width": 32, "vision_layers": 2, "vision_heads": 2,
                 "audio_width": 32, "audio_layers": 1, "audio_heads": 2, "text_width": 32, "text_layers": 1,
                 "text_heads": 2, "llm_hidden": 32, "llm_layers": 1, "llm_heads": 2, "llm_intermediate": 64,
                 "vocab_size": 400},
    },
    "foundation": {
        "whisper": {"steps": 4, "batch_size": 4, "warmup": 1},
        "siglip": {"steps": 4, "batch_size": 8, "warmup": 1, "frames_per_clip": 1},
        "phi": {"steps": 4, "batch_size": 4, "warmup": 1, "seq_len": 64},
    },
    "pretrain": {"audio": {"steps": 4, "batch_size": 4, "warmup": 1, "checkpoint_every": 2},
                 "vision": {"steps": 4, "batch_size": 4, "warmup": 1, "checkpoint_every": 2}},
    "finetune": {"steps": 4, "batch_size": 4, "warmup": 1, "checkpoint_every": 2, "lora": {"rank": 4, "alpha": 8}},
}


@pytest.fixture(scope="session")
def small_params():
    from avlib.config import Params, from_dict

    return from_dict(Params, SMALL_PARAMS)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    from avlib import synth

    out = tmp_path_factory.mktemp("small_corpus")
    profile = synth.Profile(train_clips=6, val_clips=2, test_clips=6, speech_clips=4, sound_clips=4, images=4,
                            no_audio_fraction=0.25, long_fraction=0.25)
    synth.build(profile, out, seed=1, workers=1, progress=False, name="small")  # seed 1: long, short and silent clips in each split
    return out


@pytest.fixture(scope="session")
def small_foundation(small_params, small_corpus, tmp_path_factory):
    from avlib.foundation import build_foundation

    out = tmp_path_factory.mktemp("foundation")
    build_foundation(small_params, small_corpus, out, log=lambda *a: None)
    return out
