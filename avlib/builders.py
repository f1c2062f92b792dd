"""Building an AVLM: the miniature one the tiny profiles train, or the paper's (avlib.paper).

The miniature model is made of the paper's classes (openai-whisper's AudioEncoder,
an open_clip SigLIP, transformers' PhiForCausalLM) at a size a laptop trains in
minutes; `build_model` picks the builder `model.builder` names.
"""

from __future__ import annotations

import open_clip
import whisper
from transformers import PhiConfig, PhiForCausalLM
from whisper.audio import HOP_LENGTH, SAMPLE_RATE

from avlib.config import ModelConfig
from avlib.model import AVLM, SIGLIP_PREPROCESS, assemble
from avlib.paper import build_paper
from avlib.vision_encoder import tiny_siglip_name


def build_model(cfg: ModelConfig, tokenizer=None, use_audio: bool = True) -> AVLM:
    """The AVLM of `cfg.builder`: 'tiny' (random miniature, same classes) or 'paper'."""
    if cfg.builder == "tiny":
        if tokenizer is None:
            raise ValueError("the tiny builder needs a tokenizer (avlib.tokenizer.train_tokenizer)")
        return build_tiny(cfg, tokenizer, use_audio)
    if cfg.builder == "paper":
        return build_paper(cfg, use_audio=use_audio)
    raise ValueError(f"unknown model builder {cfg.builder!r}; valid builders: tiny, paper")


def audio_ctx(window_seconds: float) -> int:
    """Whisper encoder positions for a window: half its mel frames (conv stride 2)."""
    return round(window_seconds * SAMPLE_RATE / HOP_LENGTH) // 2


def tiny_siglip_config(cfg: ModelConfig) -> dict:
    """open_clip model config of the miniature SigLIP (vision trunk registered in timm)."""
    t = cfg.tiny
    return {
        "embed_dim": t.vision_width,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {
            "image_size": t.image_size,
            "timm_model_name": tiny_siglip_name(t.vision_width, t.vision_layers, t.vision_heads, t.patch_size, t.image_size),
            "timm_model_pretrained": False,
            "timm_pool": "map",
            "timm_proj": "none",
        },
        "text_cfg": {
            "context_length": 32,
            "vocab_size": t.vocab_size,
            "width": t.text_width,
            "heads": t.text_heads,
            "layers": t.text_layers,
            "no_causal_mask": True,
            "proj_bias": True,
            "pool_type": "last",
            "norm_kwargs": {"eps": 1e-6},
        },
    }


def build_tiny_siglip(cfg: ModelConfig) -> open_clip.CustomTextCLIP:
    """A randomly initialised miniature SigLIP (both towers) from `tiny_siglip_config`."""
    config = tiny_siglip_config(cfg)
    config.pop("custom_text")  # open_clip's factory reads it; the constructor does not take it
    return open_clip.CustomTextCLIP(**config)


def tiny_phi_config(cfg: ModelConfig, vocab_size: int) -> PhiConfig:
    t = cfg.tiny
    head_dim = t.llm_hidden // t.llm_heads
    if t.llm_hidden % t.llm_heads or (head_dim // 2) % 2:
        # Phi rotates half of each head (partial_rotary_factor 0.5); that half must be even.
        raise ValueError(f"llm_hidden / llm_heads = {t.llm_hidden}/{t.llm_heads} must be an integer divisible by 4")
    return PhiConfig(
        vocab_size=vocab_size,
        hidden_size=t.llm_hidden,
        intermediate_size=t.llm_intermediate,
        num_hidden_layers=t.llm_layers,
        num_attention_heads=t.llm_heads,
        max_position_embeddings=t.llm_max_positions,
        partial_rotary_factor=0.5,
        rope_theta=t.llm_rope_theta,
        # phi-2's GELU (`gelu_new`: the tanh approximation) as one fused kernel: the same formula, 1e-7 apart; the
        # five-op `gelu_new` was 45 % of a forward pass on the CPU (benchmarks/train_step.py)
        hidden_act="gelu_pytorch_tanh",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=False,
    )


def build_tiny(cfg: ModelConfig, tokenizer, use_audio: bool = True) -> AVLM:
    """A randomly initialised miniature AVLM built from the paper's classes."""
    t = cfg.tiny
    encoder = whisper.model.AudioEncoder(cfg.audio.n_mels, audio_ctx(cfg.audio.window_seconds), t.audio_width, t.audio_heads, t.audio_layers)
    siglip = build_tiny_siglip(cfg)
    preprocess = {"size": t.image_size, **SIGLIP_PREPROCESS}
    llm = PhiForCausalLM(tiny_phi_config(cfg, len(tokenizer)))
    return assemble(cfg, encoder, siglip.visual, preprocess, llm, tokenizer, use_audio)
