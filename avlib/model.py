"""AVLM: Whisper and SigLIP features, projected and spliced into phi-2's input.

Legend: B batch, L sequence length, Nv video tokens, Na audio tokens,
Dv / Da encoder widths, E the LLM's embedding width.

    frames --SigLIP--> (Nv, Dv) --vision_projector--> (Nv, E) --+
    audio --Whisper--> (Na, Da) --audio_projector---> (Na, E) --+--> masked_scatter into
    prompt tokens with Nv <video> and Na <audio> slots ----------+    phi-2's input embeddings

The encoders are frozen feature extractors; their pooled features can be
computed once and cached (`encode_media`), and the rest of the model starts
from those features (`forward`, `generate`). `use_audio` is the one switch
between the audio-visual model and its vision-only twin: off, no audio reaches
the prompt or the model, exactly as for a clip without an audio track.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import open_clip
import torch
import whisper
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm  # text bars: a notebook without ipywidgets warns about tqdm.auto
from transformers import AutoTokenizer, PhiConfig, PhiForCausalLM
from whisper.audio import HOP_LENGTH, SAMPLE_RATE

from avlib.audio_encoder import AudioEncoder
from avlib.config import LoraConfig, ModelConfig, save_config
from avlib.integrity import file_digests, verify
from avlib.projector import build_projector
from avlib.template import collate, end_of_turn_id, media_token_ids, pad_id
from avlib.tokenizer import add_media_tokens
from avlib.vision_encoder import VisionEncoder, register_open_clip_config, tiny_siglip_name

Stage = Literal["pretrain_audio", "pretrain_vision", "finetune"]
STAGES = ("pretrain_audio", "pretrain_vision", "finetune")
PROJECTORS = ("audio_projector", "vision_projector")
LORA_DIR = "lora"

# SigLIP's own preprocessing (open_clip's pretrained config for the webli weights).
SIGLIP_PREPROCESS = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "resize_mode": "squash"}


class CheckpointNotFound(FileNotFoundError):
    """A pretrained checkpoint is not on disk and may not be downloaded."""


class AVLM(nn.Module):
    """Audio-visual LLM: frozen encoders, two projectors, a frozen (or LoRA) LLM."""

    def __init__(
        self,
        audio_encoder: AudioEncoder,
        vision_encoder: VisionEncoder,
        llm: PhiForCausalLM,
        tokenizer,
        projector: str = "mlp2x_gelu",
        use_audio: bool = True,
        max_length: int | None = None,
        max_audio_windows: int = 0,
    ):
        super().__init__()
        self.max_length, self.max_audio_windows = max_length, max_audio_windows  # truncation: avlib.template
        self.audio_encoder = audio_encoder
        self.vision_encoder = vision_encoder
        self.llm = llm
        self.tokenizer = tokenizer
        self.use_audio = use_audio
        width = llm.get_input_embeddings().embedding_dim
        self.audio_projector = build_projector(projector, audio_encoder.width, width)
        self.vision_projector = build_projector(projector, vision_encoder.width, width)
        self.video_token_id, self.audio_token_id = media_token_ids(tokenizer)
        if max(self.video_token_id, self.audio_token_id) >= llm.get_input_embeddings().num_embeddings:
            raise ValueError("the LLM's embedding table is smaller than the tokenizer; resize it before building AVLM")
        for module in (audio_encoder, vision_encoder, llm):
            module.requires_grad_(False)
        self.audio_encoder.eval()
        self.vision_encoder.eval()

    def train(self, mode: bool = True) -> AVLM:
        super().train(mode)
        # The encoders are frozen feature extractors: never in training mode.
        self.audio_encoder.eval()
        self.vision_encoder.eval()
        return self

    # ------------------------------------------------------------------ features

    @torch.no_grad()
    def encode_media(self, videos: list, audios: list) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
        """Raw clips -> pooled encoder features, the cacheable part of the model.

        videos: per clip (T, H, W, 3) uint8 frames or None (audio only); audios:
        per clip 16 kHz mono samples or None. Returns per clip (T + P, Dv) video
        features and (W * num_audio_tokens, Da) audio features, None where absent.
        """
        if len(videos) != len(audios):
            raise ValueError(f"got {len(videos)} videos but {len(audios)} audio tracks")
        present = [i for i, v in enumerate(videos) if v is not None]
        video_features: list[torch.Tensor | None] = [None] * len(videos)
        if present:
            for i, features in zip(present, self.vision_encoder([videos[i] for i in present])):
                video_features[i] = features
        return video_features, self.audio_encoder(audios)

    def collate(self, samples: list[dict], with_answers: bool = True) -> dict:
        """Samples of features (+ question, answer) -> a batch, honouring `use_audio`."""
        return collate(samples, self.tokenizer, use_audio=self.use_audio, with_answers=with_answers, max_length=self.max_length,
                       max_audio_windows=self.max_audio_windows, audio_tokens_per_window=self.audio_encoder.num_audio_tokens)

    # ------------------------------------------------------------------- splicing

    def _fill(self, embeds, input_ids, token_id, features, projector, name) -> torch.Tensor:
        """Replace the `token_id` slots of `embeds` (B, L, E) by projected features, in order."""
        slots = input_ids == token_id  # (B, L)
        for i, (n_slots, f) in enumerate(zip(slots.sum(dim=1).tolist(), features)):
            n_features = 0 if f is None else f.shape[0]
            if n_slots != n_features:
                raise ValueError(
                    f"sample {i}: the prompt has {n_slots} {name} placeholder tokens but {n_features} {name} "
                    f"feature vectors were given; build prompts with avlib.template.collate from the same features"
                )
        present = [f for f in features if f is not None and f.shape[0]]
        if not present:
            return embeds
        weight = next(projector.parameters())
        projected = projector(torch.cat(present).to(weight.device, weight.dtype))  # (ΣN, E)
        return embeds.masked_scatter(slots.unsqueeze(-1).to(embeds.device), projected.to(embeds.dtype))

    def embed(self, input_ids: torch.Tensor, video_features: list, audio_features: list) -> torch.Tensor:
        """(B, L) ids with media slots -> (B, L, E) input embeddings with the media spliced in."""
        if len(video_features) != input_ids.shape[0] or len(audio_features) != input_ids.shape[0]:
            raise ValueError(
                f"batch of {input_ids.shape[0]} prompts but {len(video_features)} video and "
                f"{len(audio_features)} audio feature entries"
            )
        if not self.use_audio:
            audio_features = [None] * len(audio_features)
        media = (input_ids == self.video_token_id) | (input_ids == self.audio_token_id)
        embeds = self.llm.get_input_embeddings()(input_ids.masked_fill(media, 0))
        embeds = self._fill(embeds, input_ids, self.video_token_id, video_features, self.vision_projector, "video")
        return self._fill(embeds, input_ids, self.audio_token_id, audio_features, self.audio_projector, "audio")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        video_features: list,
        audio_features: list,
        labels: torch.Tensor | None = None,
    ):
        """Causal-LM output; `.loss` is the mean over supervised (answer) tokens when labels are given."""
        embeds = self.embed(input_ids, video_features, audio_features)
        return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels)

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int = 32, temperature: float = 0.0) -> list[str]:
        """Answers for a batch made by `collate(..., with_answers=False)`; greedy at temperature 0."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        embeds = self.embed(batch["input_ids"], batch["video_features"], batch["audio_features"])
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        out = self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"].to(embeds.device),
            max_new_tokens=max_new_tokens,
            eos_token_id=end_of_turn_id(self.tokenizer),
            pad_token_id=pad_id(self.tokenizer),
            **sampling,
        )
        return [text.strip() for text in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    # ------------------------------------------------------------------- training

    @torch.no_grad()
    def answer(self, items: list[dict], batch_size: int = 32, max_new_tokens: int = 32, temperature: float = 0.0,
               progress: bool = False) -> list[str]:
        """Answers to feature items (question, video_features, audio_features), batch by batch, on the model's device;
        greedy unless `temperature` > 0."""
        self.eval()
        device = next(self.llm.parameters()).device
        answers: list[str] = []
        for start in tqdm(range(0, len(items), batch_size), disable=not progress, desc="answering"):
            chunk = [dict(item, answer=None) for item in items[start : start + batch_size]]
            batch = self.collate(chunk, with_answers=False)
            batch = {**batch, "input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device),
                     "video_features": [None if f is None else f.to(device) for f in batch["video_features"]],
                     "audio_features": [None if f is None else f.to(device) for f in batch["audio_features"]]}
            answers += self.generate(batch, max_new_tokens=max_new_tokens, temperature=temperature)
        return answers

    @property
    def has_lora(self) -> bool:
        return isinstance(self.llm, PeftModel)

    def configure_training(self, stage: Stage, lora: LoraConfig | None = None) -> None:
        """Make exactly the parameters of `stage` trainable; everything else is frozen.

        pretrain_audio: the audio projector. pretrain_vision: the vision projector.
        finetune: both projectors (the vision projector alone when `use_audio` is
        off) and LoRA adapters on the LLM, added here on first use.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown training stage {stage!r}; valid stages: {', '.join(STAGES)}")
        if stage == "finetune" and not self.has_lora:
            if lora is None:
                raise ValueError("finetuning needs a LoRA configuration (params.yaml: finetune.lora)")
            self.add_lora(lora)
        self.requires_grad_(False)
        if stage == "pretrain_audio":
            self.audio_projector.requires_grad_(True)
        elif stage == "pretrain_vision":
            self.vision_projector.requires_grad_(True)
        else:
            self.vision_projector.requires_grad_(True)
            self.audio_projector.requires_grad_(self.use_audio)
            for name, param in self.llm.named_parameters():
                param.requires_grad_("lora_" in name)

    def add_lora(self, lora: LoraConfig) -> None:
        names = {name.rsplit(".", 1)[-1] for name, module in self.llm.named_modules() if isinstance(module, nn.Linear)}
        unknown = sorted(set(lora.target_modules) - names)
        if unknown:
            raise ValueError(f"finetune.lora.target_modules names {unknown}, which the LLM does not have; "
                             f"its linear layers are {sorted(names)}")
        config = PeftLoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
        self.llm = get_peft_model(self.llm, config)

    def trained_parts(self) -> list[str]:
        """Names of the parts that have trainable parameters now."""
        parts = [name for name in PROJECTORS if any(p.requires_grad for p in getattr(self, name).parameters())]
        if self.has_lora and any(p.requires_grad for n, p in self.llm.named_parameters() if "lora_" in n):
            parts.append(LORA_DIR)
        return parts

    def save_trained(self, directory: str | Path, config=None) -> list[str]:
        """Save only what is being trained (projectors as safetensors, LoRA through peft), plus the config."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        parts = self.trained_parts()
        if not parts:
            raise ValueError("nothing is trainable: call configure_training(stage) before saving")
        for name in parts:
            if name == LORA_DIR:
                self.llm.save_pretrained(directory / LORA_DIR)
            else:
                state = {k: v.detach().cpu().contiguous() for k, v in getattr(self, name).state_dict().items()}
                save_file(state, directory / f"{name}.safetensors")
        if config is not None:
            save_config(config, directory)
        # What was saved, and each file's sha256, checked when the parts are loaded.
        (directory / "parts.json").write_text(json.dumps({"parts": parts, "sha256": file_digests(directory, ("parts.json",))}))
        return parts

    def load_trained(self, directory: str | Path) -> list[str]:
        """Load the parts a `save_trained` directory holds; returns their names."""
        directory = Path(directory)
        if not (directory / "parts.json").is_file():
            raise FileNotFoundError(f"{directory}: no trained parts here (parts.json missing); pass a save_trained folder")
        saved = json.loads((directory / "parts.json").read_text())
        parts = saved["parts"] if isinstance(saved, dict) else saved  # a plain list: written before digests were
        if isinstance(saved, dict):
            verify(directory, saved["sha256"], "rebuild it with `dvc repro -f` on the stage that wrote it, or `dvc checkout` it")
        for name in parts:
            if name == LORA_DIR:
                if self.has_lora:
                    raise ValueError("this model already has LoRA adapters; load adapters into a fresh model")
                self.llm = PeftModel.from_pretrained(self.llm, directory / LORA_DIR)
            elif name in PROJECTORS:
                getattr(self, name).load_state_dict(load_file(directory / f"{name}.safetensors"))
            else:
                raise ValueError(f"{directory}/parts.json names unknown part {name!r}")
        return parts


# -------------------------------------------------------------------- building


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
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=False,
    )


def assemble(cfg: ModelConfig, whisper_encoder: nn.Module, visual: nn.Module, preprocess: dict, llm: PhiForCausalLM, tokenizer,
             use_audio: bool = True) -> AVLM:
    """The one place an AVLM is put together from its parts, as `cfg` says (every builder calls it)."""
    positions = llm.config.max_position_embeddings
    if cfg.max_length > positions:
        raise ValueError(f"model.max_length {cfg.max_length} exceeds the LLM's {positions} positions; set it to {positions} or less")
    return AVLM(
        AudioEncoder(whisper_encoder, cfg.audio.window_seconds, cfg.audio.num_audio_tokens),
        VisionEncoder(visual, preprocess, cfg.vision.feature_layer),
        llm,
        tokenizer,
        projector=cfg.projector,
        use_audio=use_audio,
        max_length=cfg.max_length or positions,
        max_audio_windows=cfg.audio.max_windows,
    )


def build_tiny(cfg: ModelConfig, tokenizer, use_audio: bool = True) -> AVLM:
    """A randomly initialised miniature AVLM built from the paper's classes."""
    t = cfg.tiny
    encoder = whisper.model.AudioEncoder(cfg.audio.n_mels, audio_ctx(cfg.audio.window_seconds), t.audio_width, t.audio_heads, t.audio_layers)
    siglip = build_tiny_siglip(cfg)
    preprocess = {"size": t.image_size, **SIGLIP_PREPROCESS}
    llm = PhiForCausalLM(tiny_phi_config(cfg, len(tokenizer)))
    return assemble(cfg, encoder, siglip.visual, preprocess, llm, tokenizer, use_audio)


# ---------------------------------------------------------------------- paper


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
