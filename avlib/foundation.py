"""Stage 1: the foundation models the study freezes.

Paper profile: Whisper small, SigLIP so400m/webli and phi-2 are loaded (from
disk, or the hub when online), their shapes checked and their digests recorded.

Tiny and smoke profiles: miniature foundation models are *trained* here, with
the paper's own classes, on the synthetic corpus, so that the later stages run
the paper's recipe (frozen encoders, frozen LLM) on models that know something:

    tokenizer   byte-level BPE on the corpus text                       (tokenizers)
    Whisper     encoder + decoder on speech-to-text and sound captions  (openai-whisper)
    SigLIP      image + text towers with the sigmoid loss on frames     (open_clip)
    Phi         causal LM on the corpus text                            (transformers)

The recipes are avlib.recipes'. Each model is saved here in its library's own
format, so the same loaders read them as read the real checkpoints
(`whisper.load_model`, `open_clip.create_model('local-dir:...')`,
`from_pretrained`), and its held-out scores (word error rate, image-to-text
recall@1, perplexity, each beside its chance level) go into the manifest.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import PhiForCausalLM

from avlib.config import Params, save_config
from avlib.features import module_digest
from avlib.integrity import digest, verify_digest
from avlib.builders import build_tiny_siglip, tiny_phi_config, tiny_siglip_config
from avlib.model import AVLM, SIGLIP_PREPROCESS, assemble
from avlib.paper import build_paper, load_llm, load_siglip, load_whisper_encoder
from avlib.recipes import WhisperWithHeads, corpus_texts, save_whisper, train_phi, train_siglip, train_whisper, whisper_dims
from avlib.train import seed_everything
from avlib.tokenizer import train_tokenizer
from avlib.vision_encoder import save_open_clip

WHISPER_FILE = "whisper.pt"
SIGLIP_DIR = "siglip"
PHI_DIR = "phi"
TOKENIZER_DIR = "tokenizer"
MANIFEST = "manifest.json"


class MissingData(FileNotFoundError):
    """The corpus is not where the stage expects it."""


def require_corpus(root: str | Path, corpus=None) -> Path:
    """The corpus folder, checked to exist and, given params.corpus, to be the corpus asked for."""
    root = Path(root)
    profile = corpus.profile if corpus is not None else "tiny"
    seed = corpus.seed if corpus is not None else 0
    rebuild = f"`python -m avlib.synth --profile {profile} --seed {seed} --out {root}`"
    if not (root / "manifest.json").is_file():
        raise MissingData(
            f"no corpus at {root}/: build it with {rebuild} (or `make data`), "
            f"or fetch it with `dvc pull` where a DVC remote is configured"
        )
    manifest = json.loads((root / "manifest.json").read_text())
    if corpus is not None and corpus.profile != "paper" and (manifest.get("profile"), manifest.get("seed")) != (profile, seed):
        raise MissingData(
            f"{root}/ holds the {manifest.get('profile')} corpus (seed {manifest.get('seed')}), but params.yaml asks for "
            f"{profile} (seed {seed}); rebuild it with {rebuild}"
        )
    return root


def build_foundation(params: Params, data_root: str | Path, out: str | Path, log=print) -> dict:
    """Stage 1 for the tiny and smoke profiles: train, score and save the miniature models.

    With foundation.train false the models are saved as initialised (seeded):
    nothing in prepared real data labels what their recipes learn from.
    """
    root, out = require_corpus(data_root, params.corpus), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    tokenizer = train_tokenizer(corpus_texts(root, "train"), params.model.tiny.vocab_size)
    tokenizer.save_pretrained(out / TOKENIZER_DIR)
    log(f"tokenizer: {len(tokenizer)} tokens")
    timings, scores = {}, {}
    if params.foundation.train:
        t = time.monotonic()
        speech_model, scores["whisper"] = train_whisper(root, params, tokenizer, log)
        timings["whisper"] = time.monotonic() - t
        t = time.monotonic()
        clip, scores["siglip"] = train_siglip(root, params, tokenizer, log)
        timings["siglip"] = time.monotonic() - t
        t = time.monotonic()
        phi, scores["phi"] = train_phi(root, params, tokenizer, log)
        timings["phi"] = time.monotonic() - t
    else:
        seed_everything(params.seed)
        speech_model = WhisperWithHeads(whisper_dims(params.model, len(tokenizer))).whisper
        clip = build_tiny_siglip(params.model)
        phi = PhiForCausalLM(tiny_phi_config(params.model, len(tokenizer)))
        log("foundation.train is false: the miniature Whisper, SigLIP and Phi are saved untrained (seeded initialisation)")
    save_whisper(speech_model, out / WHISPER_FILE)
    save_open_clip(clip, tiny_siglip_config(params.model), {"size": params.model.tiny.image_size, **SIGLIP_PREPROCESS}, out / SIGLIP_DIR)
    phi.save_pretrained(out / PHI_DIR)
    tokenizer.save_pretrained(out / PHI_DIR)

    manifest = {
        "profile": params.profile,
        "builder": "tiny",
        "trained": params.foundation.train,
        "checkpoints": {
            "tokenizer": {"path": TOKENIZER_DIR, "sha256": digest(out / TOKENIZER_DIR)},
            "whisper": {"path": WHISPER_FILE, "sha256": digest(out / WHISPER_FILE)},
            "siglip": {"path": SIGLIP_DIR, "sha256": digest(out / SIGLIP_DIR)},
            "phi": {"path": PHI_DIR, "sha256": digest(out / PHI_DIR)},
        },
        "scores": scores,
    }  # no timings: this file's hash, like the weights', should mean "the same models"
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    save_config(params, out)
    log("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f", total {time.monotonic() - start:.0f}")
    return manifest


def load_foundation_model(params: Params, folder: str | Path, use_audio: bool = True) -> AVLM:
    """The AVLM on top of stage 1's models: the miniature ones from `folder`, or the paper's."""
    cfg = params.model
    if cfg.builder == "paper":
        return build_paper(cfg, use_audio=use_audio, seed=params.seed)
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise MissingData(f"{folder}: no foundation models here; run stage 1 first (notebook 01_encoders, or `dvc repro encoders`)")
    for part in json.loads((folder / MANIFEST).read_text())["checkpoints"].values():
        verify_digest(folder / part["path"], part["sha256"], "rebuild it with `dvc repro -f encoders`, or `dvc checkout` it")
    encoder = load_whisper_encoder(str(folder / WHISPER_FILE), folder)
    visual, preprocess = load_siglip(f"local-dir:{folder / SIGLIP_DIR}", "", folder)
    llm, tokenizer = load_llm(str(folder / PHI_DIR), folder)
    # The projectors are the only weights made here: seed them, or each process would start elsewhere.
    torch.manual_seed(params.seed)
    return assemble(cfg, encoder, visual, preprocess, llm, tokenizer, use_audio)


def check_paper_models(params: Params, out: str | Path, log=print) -> dict:
    """Stage 1 for the paper profile: load the pretrained models, check their shapes, record digests."""
    model = build_paper(params.model)
    t = params.model
    vision_tokens = model.vision_encoder.num_tokens(t.vision.num_frames)
    shapes = {
        "audio_width": model.audio_encoder.width,
        "audio_tokens_per_window": model.audio_encoder.num_audio_tokens,
        "vision_width": model.vision_encoder.width,
        "vision_patches": model.vision_encoder.num_patches,
        "video_tokens": vision_tokens,
        "llm_width": model.llm.get_input_embeddings().embedding_dim,
        "vocab": len(model.tokenizer),
    }
    log(f"paper models: {shapes}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "profile": params.profile,
        "builder": "paper",
        "shapes": shapes,
        "digests": {
            "audio_encoder": module_digest(model.audio_encoder),
            "vision_encoder": module_digest(model.vision_encoder),
            "vision_projector": module_digest(model.vision_projector),
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    save_config(params, out)
    return manifest
