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
from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PhiForCausalLM

from avlib.audio_encoder import AudioEncoder
from avlib.config import LoraConfig, ModelConfig, save_config
from avlib.integrity import file_digests, verify
from avlib.progress import progress_bar
from avlib.projector import build_projector
from avlib.template import check_media_order, collate, end_of_turn_id, media_token_ids, pad_id, select_rows
from avlib.vision_encoder import VisionEncoder

Stage = Literal["pretrain_audio", "pretrain_vision", "finetune"]
STAGES = ("pretrain_audio", "pretrain_vision", "finetune")
PROJECTORS = ("audio_projector", "vision_projector")
LORA_DIR = "lora"

# SigLIP's own preprocessing (open_clip's pretrained config for the webli weights).
SIGLIP_PREPROCESS = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "resize_mode": "squash"}


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
        media_order: str = "video_first",
    ):
        super().__init__()
        self.max_length, self.max_audio_windows = max_length, max_audio_windows  # truncation: avlib.template
        self.media_order = check_media_order(media_order)  # which placeholder line comes first in the prompt
        self.audio_encoder = audio_encoder
        self.vision_encoder = vision_encoder
        self.llm = llm
        self.tokenizer = tokenizer
        self.use_audio = use_audio
        self.lora_merged = False  # merge_lora: for answering only
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
                       max_audio_windows=self.max_audio_windows, audio_tokens_per_window=self.audio_encoder.num_audio_tokens,
                       media_order=self.media_order)

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
        logits_at: torch.Tensor | None = None,
    ):
        """Causal-LM output; `.loss` is the mean over supervised (answer) tokens when labels are given.

        With `logits_at`, a (B, L) bool mask, only the (N, vocab) logits of those positions, in row order. Training
        needs them only where the next token is supervised, a few positions in a hundred; the others, media
        included, would be computed and held for nothing. There, the leading positions every row shares
        (`shared_prefix`, up to the first one in `logits_at`) are computed once.
        """
        embeds = self.embed(input_ids, video_features, audio_features)
        if logits_at is None:
            return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels)
        llm = self.base_llm
        decoder, attention_mask = llm.get_decoder(), attention_mask.to(embeds.device)
        logits_at = logits_at.to(embeds.device)
        wanted = logits_at.any(dim=0).nonzero()
        start = min(self.shared_prefix(embeds, attention_mask), int(wanted[0]) if len(wanted) else embeds.shape[1])
        cache = None
        if start:
            # Every row begins with the same `start` positions (the system prompt): run them once, as a batch of one,
            # and let each row attend to that one copy. The same attention and the same gradients, for fewer FLOPs.
            cache = decoder(inputs_embeds=embeds[:1, :start], use_cache=True).cache
            cache.batch_repeat_interleave(embeds.shape[0])
        hidden = decoder(inputs_embeds=embeds[:, start:], attention_mask=attention_mask, cache=cache).last_hidden_state
        return llm.get_output_embeddings()(hidden[logits_at[:, start:]])

    def shared_prefix(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> int:
        """How many leading positions every row of a batch holds alike (the same input embedding, none of them padding),
        for `forward` to compute once; 0 where that would not be the same computation: a single row, dropout in the LLM
        while training (each row draws its own masks), or gradient checkpointing (which keeps no cache)."""
        if embeds.shape[0] < 2:
            return 0
        llm = self.base_llm
        if self.llm.training and (llm.is_activation_checkpointing or getattr(llm.config, "attention_dropout", 0.0)
                                  or any(isinstance(m, nn.Dropout) and m.p > 0 for m in self.llm.modules())):
            return 0
        alike = (embeds == embeds[:1]).all(dim=-1).all(dim=0) & attention_mask.bool().all(dim=0)
        return min(int(alike.int().cumprod(dim=0).sum()), embeds.shape[1] - 1)  # the last position is always computed

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
        """Answers to feature items (question, video_features, audio_features), in their order, on the model's device;
        greedy unless `temperature` > 0. Batches are made of prompts of like length, so that little padding is computed
        (each answer is its prompt's alone: the batch it shares changes nothing but the float rounding)."""
        self.eval()
        if not items:
            return []
        prompts = self.collate(items, with_answers=False)  # padded on the left; answers, if any, left out
        order = torch.argsort(prompts["attention_mask"].sum(dim=1), stable=True).tolist()
        answers: list[str] = [""] * len(items)
        for start in progress_bar(range(0, len(items), batch_size), show=progress, desc="answering"):
            rows = order[start : start + batch_size]
            batch = self.on_device(select_rows(prompts, rows, side="left"))
            for i, text in zip(rows, self.generate(batch, max_new_tokens=max_new_tokens, temperature=temperature)):
                answers[i] = text
        return answers

    def prompt_batch(self, items: list[dict]) -> dict:
        """Feature items as one batch of prompts, their answers left out (padded on the left, so every prompt ends at
        the last position), on the LLM's device."""
        return self.on_device(self.collate(items, with_answers=False))

    def on_device(self, batch: dict) -> dict:
        """A collated batch with its ids, mask and features moved to the LLM's device."""
        device = next(self.llm.parameters()).device
        return {**batch, "input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device),
                "video_features": [None if f is None else f.to(device) for f in batch["video_features"]],
                "audio_features": [None if f is None else f.to(device) for f in batch["audio_features"]]}

    @property
    def has_lora(self) -> bool:
        return isinstance(self.llm, PeftModel)

    @property
    def base_llm(self) -> PhiForCausalLM:
        """The LLM itself, under its LoRA wrapper where it has one."""
        return self.llm.get_base_model() if self.has_lora else self.llm

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

    def merge_lora(self) -> AVLM:
        """For answering only: each LoRA adapter folded into the weight it adapts (W + B A alpha/r), so that a forward
        pass computes one matrix product per adapted layer instead of three. Answers stay the same but for float
        rounding; the model is frozen and can no longer be saved as adapters (save before merging)."""
        if self.has_lora:
            self.llm = self.llm.merge_and_unload()
            self.lora_merged = True
        self.requires_grad_(False)
        return self

    def trained_parts(self) -> list[str]:
        """Names of the parts that have trainable parameters now."""
        parts = [name for name in PROJECTORS if any(p.requires_grad for p in getattr(self, name).parameters())]
        if self.has_lora and any(p.requires_grad for n, p in self.llm.named_parameters() if "lora_" in n):
            parts.append(LORA_DIR)
        return parts

    def save_trained(self, directory: str | Path, config=None) -> list[str]:
        """Save only what is being trained (projectors as safetensors, LoRA through peft), plus the config."""
        if self.lora_merged:
            raise ValueError("this model's LoRA adapters were merged into the LLM for answering (merge_lora, which "
                             "avlib.runtime.for_inference calls): save it before merging")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        parts = self.trained_parts()
        if not parts:
            raise ValueError("nothing is trainable: call configure_training(stage) before saving")
        for name in parts:
            if name == LORA_DIR:
                self.llm.save_pretrained(directory / LORA_DIR)
                _list_sets_sorted(directory / LORA_DIR / "adapter_config.json", self.llm.peft_config["default"])
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


def _list_sets_sorted(path: Path, peft_config) -> None:
    """Rewrite peft's adapter_config.json with each set-valued field (target_modules) as a sorted list.

    peft writes a set as `list(set)`, in an order that follows the process's string hashing (random per
    process): the same adapters would be saved as a different file each run, and DVC would record a new hash
    for an unchanged model. peft reads the lists back as sets, so the order means nothing to it.
    """
    saved = json.loads(path.read_text())
    for key, value in peft_config.to_dict().items():
        if isinstance(value, set):
            saved[key] = sorted(value)
    path.write_text(json.dumps(saved, indent=2, sort_keys=True))  # peft's own layout


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
        media_order=cfg.media_order,
    )
