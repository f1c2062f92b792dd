"""A tiny, fully deterministic training run, shared by the tests and their subprocesses.

    python tests/train_helpers.py OUT [STEPS]        (also under `accelerate launch`)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from avlib.config import AudioConfig, LoraConfig, ModelConfig, TinyModelConfig, TrainingConfig, VisionConfig
from avlib.builders import build_model
from avlib.tokenizer import train_tokenizer
from avlib.train import train

TEXTS = ["the red circle moves left", "a voice says apple", "how many beeps", "what colour is the shape"] * 20
CFG = ModelConfig(
    audio=AudioConfig(window_seconds=1.0, num_audio_tokens=4),
    vision=VisionConfig(num_frames=2),
    tiny=TinyModelConfig(image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=2,
                         audio_width=32, audio_layers=1, audio_heads=2, llm_hidden=32, llm_layers=1, llm_heads=2,
                         llm_intermediate=64),
)
LORA = LoraConfig(rank=4, alpha=8, dropout=0.1)  # dropout on: resuming must restore the RNG too
# Dropout masks depend on how a batch is split over processes; comparing splits needs it off.
LORA_NO_DROPOUT = LoraConfig(rank=4, alpha=8, dropout=0.0)


def make_model(use_audio: bool = True):
    torch.manual_seed(0)
    return build_model(CFG, train_tokenizer(TEXTS, 300), use_audio=use_audio)


def make_dataset(n: int = 12) -> list[dict]:
    """Feature items: random features, some without audio, answers from a small set."""
    g = torch.Generator().manual_seed(1)
    answers = ["apple", "three", "the red circle", "left"]
    return [
        {"question": "what is it", "answer": answers[i % 4],
         "video_features": torch.randn(6, 32, generator=g),
         "audio_features": None if i % 3 == 0 else torch.randn(4 * (1 + i % 2), 32, generator=g)}
        for i in range(n)
    ]


def run(out, steps: int = 8, stage: str = "finetune", use_audio: bool = True, lora: LoraConfig = LORA, length_groups: int = 1,
        gradient_checkpointing: bool = False, **kwargs):
    torch.set_num_threads(1)
    model = make_model(use_audio)
    cfg = TrainingConfig(steps=steps, batch_size=4, lr=5e-3, warmup=2, checkpoint_every=2, log_every=1, length_groups=length_groups,
                         gradient_checkpointing=gradient_checkpointing)
    return model, train(model, make_dataset(), stage, cfg, out, seed=0, lora=lora, progress=False, **kwargs)


if __name__ == "__main__":
    dropout = len(sys.argv) > 3 and sys.argv[3] == "no-dropout"
    run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8, lora=LORA_NO_DROPOUT if dropout else LORA)
