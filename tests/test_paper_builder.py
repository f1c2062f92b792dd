"""The paper builder: its offline failure, and its loading code on local checkpoints in the real formats."""

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper

from avlib.config import ModelConfig, PaperModelConfig
from avlib.builders import audio_ctx, build_model, build_tiny_siglip, tiny_phi_config, tiny_siglip_config
from avlib.model import SIGLIP_PREPROCESS
from avlib.paper import CheckpointNotFound
from avlib.vision_encoder import save_open_clip
from transformers import PhiForCausalLM


def test_offline_paper_builder_fails_fast_and_says_what_to_download(tmp_path):
    cfg = ModelConfig(builder="paper", paper=PaperModelConfig(cache_dir=str(tmp_path / "ckpt"), vision_projector=str(tmp_path / "ckpt/bunny/mm_projector.bin")))
    start = time.monotonic()
    with pytest.raises(CheckpointNotFound) as err:
        build_model(cfg)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "openaipublic.azureedge.net" in message and str(tmp_path / "ckpt" / "whisper") in message
    assert "hf download timm/ViT-SO400M-14-SigLIP-384 open_clip_model.safetensors" in message
    assert "hf download microsoft/phi-2" in message
    assert "BAAI/bunny-pretrain-phi-2-siglip" in message and "mm_projector.bin" in message


@pytest.fixture
def local_checkpoints(cfg, tokenizer, tmp_path):
    """Miniature checkpoints in the formats of the real ones."""
    torch.manual_seed(0)
    dims = whisper.model.ModelDimensions(
        n_mels=80, n_audio_ctx=audio_ctx(cfg.audio.window_seconds), n_audio_state=32, n_audio_head=2, n_audio_layer=1,
        n_vocab=len(tokenizer), n_text_ctx=16, n_text_state=32, n_text_head=2, n_text_layer=1,
    )
    speech = whisper.model.Whisper(dims)
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": speech.state_dict()}, tmp_path / "whisper.pt")

    siglip = build_tiny_siglip(cfg)
    save_open_clip(siglip, tiny_siglip_config(cfg), {"size": cfg.tiny.image_size, **SIGLIP_PREPROCESS}, tmp_path / "siglip")

    llm = PhiForCausalLM(tiny_phi_config(cfg, len(tokenizer)))
    llm.save_pretrained(tmp_path / "phi")
    tokenizer.save_pretrained(tmp_path / "phi")

    bunny = {"model.mm_projector.0.weight": torch.randn(32, 32), "model.mm_projector.0.bias": torch.randn(32),
             "model.mm_projector.2.weight": torch.randn(32, 32), "model.mm_projector.2.bias": torch.randn(32)}
    torch.save(bunny, tmp_path / "mm_projector.bin")
    paper = PaperModelConfig(
        whisper=str(tmp_path / "whisper.pt"), siglip_model=f"local-dir:{tmp_path / 'siglip'}",
        llm=str(tmp_path / "phi"), vision_projector=str(tmp_path / "mm_projector.bin"), cache_dir=str(tmp_path),
    )
    return dataclasses.replace(cfg, builder="paper", paper=paper), speech, siglip, llm, bunny


def test_paper_builder_loads_local_checkpoints(local_checkpoints):
    cfg, speech, siglip, llm, bunny = local_checkpoints
    model = build_model(cfg)
    for name, value in speech.encoder.state_dict().items():
        assert torch.equal(model.audio_encoder.encoder.state_dict()[name], value), name
    torch.testing.assert_close(model.vision_encoder.trunk.patch_embed.proj.weight, siglip.visual.trunk.patch_embed.proj.weight)
    for name, value in llm.state_dict().items():
        assert torch.equal(model.llm.state_dict()[name], value), name
    assert torch.equal(model.vision_projector[0].weight, bunny["model.mm_projector.0.weight"])
    assert torch.equal(model.vision_projector[2].bias, bunny["model.mm_projector.2.bias"])
    # and it runs
    rng = np.random.default_rng(0)
    videos, audios = model.encode_media([rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)], [np.zeros(16000, np.float32)])
    batch = model.collate([{"question": "q", "answer": "a", "video_features": videos[0], "audio_features": audios[0]}])
    out = model(batch["input_ids"], batch["attention_mask"], batch["video_features"], batch["audio_features"], batch["labels"])
    assert torch.isfinite(out.loss)


def test_bunny_projector_of_the_wrong_shape_is_rejected(local_checkpoints, tmp_path):
    cfg, *_ = local_checkpoints
    torch.save({"model.mm_projector.0.weight": torch.randn(8, 8)}, tmp_path / "bad.bin")
    cfg = dataclasses.replace(cfg, paper=dataclasses.replace(cfg.paper, vision_projector=str(tmp_path / "bad.bin")))
    with pytest.raises(ValueError, match="do not fit the model's projector"):
        build_model(cfg)


def test_local_siglip_folder_without_weights_is_reported(local_checkpoints):
    cfg, *_ = local_checkpoints
    folder = cfg.paper.siglip_model.removeprefix("local-dir:")
    (Path(folder) / "open_clip_model.safetensors").unlink()
    with pytest.raises(CheckpointNotFound, match="open_clip_model.safetensors"):
        build_model(cfg)
