"""The paper's model from its published checkpoints: Whisper small, SigLIP so400m, phi-2, Bunny's projector.

Everything is read from disk when it is there (model.paper.* names files and
folders, or hub names kept in model.paper.cache_dir). Offline, whatever is
missing is listed with where to put it before anything loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import open_clip
import torch
import whisper
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from torch import nn
from transformers import AutoTokenizer, PhiForCausalLM

from avlib.config import ModelConfig
from avlib.model import AVLM, assemble
from avlib.tokenizer import add_media_tokens
from avlib.vision_encoder import register_open_clip_config


class CheckpointNotFound(FileNotFoundError):
    """A pretrained checkpoint is not on disk and may not be downloaded."""


def _offline() -> bool:
    return bool(hub_constants.HF_HUB_OFFLINE)


def _hub_cached(repo: str, filename: str, cache_dir: str | Path) -> bool:
    """Whether the hub file is in our cache folder or the user's default hub cache."""
    return any(
        isinstance(try_to_load_from_cache(repo, filename, cache_dir=cache), str)
        for cache in (str(Path(cache_dir) / "hub"), None)
    )


def missing_paper_checkpoints(cfg: ModelConfig) -> list[str]:
    """What must be downloaded, and where to, before the paper model can load offline.

    Empty when everything is on disk, or when downloads are allowed for what is not.
    """
    p, root = cfg.paper, Path(cfg.paper.cache_dir)
    offline, missing = _offline(), []
    if not os.path.isfile(p.whisper):
        if p.whisper not in whisper._MODELS:
            missing.append(f"model.paper.whisper={p.whisper!r} is neither a file nor a Whisper name ({', '.join(whisper.available_models())})")
        elif offline and not (root / "whisper" / os.path.basename(whisper._MODELS[p.whisper])).is_file():
            url = whisper._MODELS[p.whisper]
            missing.append(f"Whisper {p.whisper}: download {url} into {root / 'whisper'}/")
    if p.siglip_model.startswith("local-dir:"):
        folder = Path(p.siglip_model.removeprefix("local-dir:"))
        if not (folder / "open_clip_config.json").is_file() or not any(folder.glob("*.safetensors")):
            missing.append(f"SigLIP: {folder} needs open_clip_config.json and open_clip_model.safetensors (open_clip's hub layout)")
    elif not os.path.isfile(p.siglip_pretrained):
        repo = ((open_clip.get_pretrained_cfg(p.siglip_model, p.siglip_pretrained) or {}).get("hf_hub") or "").strip("/")
        if not repo:
            missing.append(f"SigLIP: open_clip knows no pretrained tag {p.siglip_pretrained!r} for {p.siglip_model}; give a checkpoint file")
        elif offline and not any(_hub_cached(repo, f, root) for f in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")):
            target = root / "siglip"
            missing.append(
                f"SigLIP {p.siglip_model}/{p.siglip_pretrained}: run `hf download {repo} open_clip_model.safetensors "
                f"--local-dir {target}` and set model.paper.siglip_pretrained: {target / 'open_clip_model.safetensors'}"
            )
    if not os.path.isdir(p.llm) and offline and not _hub_cached(p.llm, "config.json", root):
        target = root / "phi-2"
        missing.append(f"LLM {p.llm}: run `hf download {p.llm} --local-dir {target}` and set model.paper.llm: {target}")
    if p.vision_projector and not os.path.isfile(p.vision_projector):
        missing.append(
            f"Bunny's projector: download mm_projector.bin from the hub repo BAAI/bunny-pretrain-phi-2-siglip "
            f"to {p.vision_projector} (or set model.paper.vision_projector)"
        )
    return missing


def load_whisper_encoder(name_or_path: str, cache_dir: str | Path) -> whisper.model.AudioEncoder:
    """The encoder of an openai-whisper checkpoint file, or of a named model (kept in cache_dir/whisper)."""
    if os.path.isfile(name_or_path):
        return whisper.load_model(name_or_path, device="cpu").encoder
    return whisper.load_model(name_or_path, device="cpu", download_root=str(Path(cache_dir) / "whisper")).encoder


def load_siglip(model_name: str, pretrained: str, cache_dir: str | Path) -> tuple[nn.Module, dict]:
    """open_clip SigLIP: its vision tower and preprocessing config.

    `model_name` is an open_clip name, with `pretrained` a tag or a checkpoint
    file, or 'local-dir:FOLDER' (open_clip_config.json + weights, the hub layout).
    """
    if model_name.startswith("local-dir:"):
        config = json.loads((Path(model_name.removeprefix("local-dir:")) / "open_clip_config.json").read_text())
        register_open_clip_config(config["model_cfg"])
        pretrained = None
    clip = open_clip.create_model(model_name, pretrained=pretrained, cache_dir=str(Path(cache_dir) / "hub"))
    return clip.visual, open_clip.get_model_preprocess_cfg(clip)


def load_llm(name_or_path: str, cache_dir: str | Path, dtype: torch.dtype = torch.float32):
    """phi-2 (PhiForCausalLM) and its tokenizer, with the media tokens added."""
    hub_cache = None if os.path.isdir(name_or_path) else str(Path(cache_dir) / "hub")
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, cache_dir=hub_cache)
    llm = PhiForCausalLM.from_pretrained(name_or_path, dtype=dtype, cache_dir=hub_cache)
    add_media_tokens(tokenizer)
    if len(tokenizer) > llm.get_input_embeddings().num_embeddings:
        llm.resize_token_embeddings(len(tokenizer))
    return llm, tokenizer


def load_bunny_projector(projector: nn.Module, path: str | Path) -> None:
    """Load Bunny's pretrained `mm_projector.bin` (keys 'model.mm_projector.0.weight', ...) into `projector`."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.split("mm_projector.", 1)[1]: v for k, v in state.items() if "mm_projector." in k}
    expected = {k: tuple(v.shape) for k, v in projector.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        raise ValueError(f"{path}: projector weights {found} do not fit the model's projector {expected}")
    projector.load_state_dict(state)


def build_paper(cfg: ModelConfig, use_audio: bool = True, dtype: torch.dtype = torch.float32, seed: int = 0) -> AVLM:
    """Whisper small, SigLIP so400m/webli, phi-2 and Bunny's projector, from disk or (online) the hub.

    `seed` initialises the audio projector (the one part not loaded)."""
    missing = missing_paper_checkpoints(cfg)
    if missing:  # before loading anything: fail in a second, not after minutes of loading
        raise CheckpointNotFound("the paper model cannot be built; missing checkpoints:\n  - " + "\n  - ".join(missing))
    p = cfg.paper
    encoder = load_whisper_encoder(p.whisper, p.cache_dir)
    visual, preprocess = load_siglip(p.siglip_model, p.siglip_pretrained, p.cache_dir)
    llm, tokenizer = load_llm(p.llm, p.cache_dir, dtype)
    torch.manual_seed(seed)
    model = assemble(cfg, encoder.to(dtype), visual.to(dtype), preprocess, llm, tokenizer, use_audio)
    if p.vision_projector:
        load_bunny_projector(model.vision_projector, p.vision_projector)
    return model
