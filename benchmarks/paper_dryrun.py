"""Benchmark: every stage of the paper profile at its real sizes, with random weights, on a handful of clips.

The models are the paper's architectures built from their configurations
(nothing is downloaded): Whisper small's encoder, SigLIP so400m/14 at 384 px,
a phi-2-sized LLM (2560 wide, 32 layers), LoRA r128 on every projection,
mlp2x_gelu projectors; 100 frames per clip (829 video tokens), 64 audio tokens
per 30 s window. On generated H.264/AAC clips it measures, side by side in one
run:

* feature extraction: decoding (load_clip) and the frozen encoders, clips/s;
* a LoRA finetuning step: seconds, tokens/s, peak memory, with and without
  gradient checkpointing;
* generation: new tokens/s at the evaluation batch size;
* one finetuning epoch from the feature cache vs from raw media (decoding and
  encoding every clip each step): `speedup: N.Nx`.

    python benchmarks/paper_dryrun.py            # on a GPU (bf16); several minutes
    python benchmarks/paper_dryrun.py --tiny     # miniature sizes on the CPU: what the tests run
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import open_clip
import torch
import whisper
from transformers import PhiConfig, PhiForCausalLM

from avlib.audio_encoder import AudioEncoder
from avlib.config import LoraConfig
from avlib.media import load_clip, write_media
from avlib.model import AVLM, SIGLIP_PREPROCESS
from avlib.runtime import frozen_in_bf16
from avlib.tokenizer import train_tokenizer
from avlib.vision_encoder import VisionEncoder, tiny_siglip_name
from gpu_lora_step import step_time  # the same timed step, from the script beside this one

WORDS = "the a man woman plays guitar piano violin on stage outdoors indoors what who where is doing holding".split()


def sizes(tiny: bool) -> dict:
    if tiny:
        return {"frames": 4, "window": 2.0, "audio_tokens": 8, "image": 32, "lora": 8, "text": 32, "clips": 3, "clip_seconds": 3,
                "batch": 2, "generate": 8}
    return {"frames": 100, "window": 30.0, "audio_tokens": 64, "image": 384, "lora": 128, "text": 128, "clips": 4,
            "clip_seconds": 20, "batch": 4, "generate": 64}  # batch 8 without checkpointing takes 74 GiB of an H100's 80


def build(tiny: bool, device: str) -> AVLM:
    """The AVLM at the paper's sizes (or miniature ones), random weights, frozen parts in bf16 on a GPU."""
    torch.manual_seed(0)
    s = sizes(tiny)
    tokenizer = train_tokenizer([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 20, 400)
    if tiny:
        speech = whisper.model.AudioEncoder(80, 100, 32, 2, 1)  # 2 s windows: 200 mel frames, 100 positions
        name = tiny_siglip_name(48, 2, 4, 8, s["image"])
        clip = open_clip.CustomTextCLIP(48, {"image_size": s["image"], "timm_model_name": name, "timm_model_pretrained": False,
                                             "timm_pool": "map", "timm_proj": "none"},
                                        {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1})
        visual, preprocess = clip.visual, {"size": s["image"], **SIGLIP_PREPROCESS}
        llm_cfg = PhiConfig(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                            partial_rotary_factor=0.5, max_position_embeddings=2048)
    else:
        speech = whisper.model.AudioEncoder(80, 1500, 768, 12, 12)  # Whisper small's encoder (openai-whisper's dims)
        clip = open_clip.create_model("ViT-SO400M-14-SigLIP-384", pretrained=None)  # so400m/14 at 384 px
        visual, preprocess = clip.visual, open_clip.get_model_preprocess_cfg(clip)
        # phi-2's published configuration (microsoft/phi-2 config.json)
        llm_cfg = PhiConfig(vocab_size=51200, hidden_size=2560, intermediate_size=10240, num_hidden_layers=32, num_attention_heads=32,
                            partial_rotary_factor=0.4, max_position_embeddings=2048, resid_pdrop=0.1)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        llm = PhiForCausalLM(llm_cfg).to(dtype)
    model = AVLM(AudioEncoder(speech, s["window"], s["audio_tokens"]), VisionEncoder(visual, preprocess, feature_layer=-2),
                 llm, tokenizer, projector="mlp2x_gelu")
    model.audio_encoder.to(device, dtype).norms_in_float()
    model.vision_encoder.to(device, dtype)
    model.audio_projector.to(device)
    model.vision_projector.to(device)
    return model


def make_clips(folder: Path, tiny: bool) -> list[Path]:
    """Generated H.264/AAC clips: a moving square on a gradient, a tone; keyframes every 2 s, as uploads have."""
    s, rng = sizes(tiny), np.random.default_rng(0)
    width, height, fps = (64, 48, 8) if tiny else (640, 360, 10)
    paths = []
    for i in range(s["clips"]):
        count = s["clip_seconds"] * fps
        base = np.linspace(0, 200, width, dtype=np.float32)[None, :, None].repeat(height, 0).repeat(3, 2)
        frames = np.repeat(base[None], count, 0).astype(np.uint8)
        for t in range(count):
            x = (t * 4) % (width - 16)
            frames[t, height // 3 : height // 3 + 16, x : x + 16] = (230, 40 + 50 * i, 40)
        audio = (0.2 * np.sin(2 * np.pi * (300 + 100 * i) * np.arange(s["clip_seconds"] * 16000) / 16000)).astype(np.float32)
        audio += rng.normal(0, 0.01, audio.shape).astype(np.float32)
        paths.append(write_media(folder / f"clip{i}.mp4", frames, fps, audio, 16000, keyframe_seconds=2.0))
    return paths


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB on the GPU"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB resident (process)"


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


@torch.no_grad()
def extract(model: AVLM, clips: list[Path], tiny: bool, device: str) -> tuple[list[dict], float, float]:
    """Features of every clip; (items, seconds decoding per clip, seconds encoding per clip)."""
    s = sizes(tiny)
    size = model.vision_encoder.image_size[0]
    decode_s = encode_s = 0.0
    items = []
    for path in clips:
        start = time.perf_counter()
        clip = load_clip(path, num_frames=s["frames"], frame_size=size)
        decode_s += time.perf_counter() - start
        sync(device)
        start = time.perf_counter()
        (video,), (audio,) = model.encode_media([torch.from_numpy(clip.frames).to(device)], [clip.audio])
        sync(device)
        encode_s += time.perf_counter() - start
        items.append({"question": "What is the man doing on the stage?", "answer": " ".join(WORDS[: s["text"] // 4]),
                      "video_features": video.float().cpu(), "audio_features": audio.float().cpu()})
    return items, decode_s / len(clips), encode_s / len(clips)


def lora_step(model: AVLM, items: list[dict], batch: int, device: str, steps: int = 2) -> tuple[float, int]:
    """Best seconds per LoRA step on `batch` items (cycled), and its token count (gpu_lora_step's timing loop)."""
    return step_time(model, model.collate([items[i % len(items)] for i in range(batch)]), device, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="miniature sizes on the CPU (what the tests run)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    s = sizes(args.tiny)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; {'miniature' if args.tiny else 'paper'} sizes, random weights")
    model = build(args.tiny, device)
    print(f"LLM {model.llm.config.hidden_size} wide x {model.llm.config.num_hidden_layers} layers; vision tokens per clip "
          f"{s['frames']} + {model.vision_encoder.num_patches}; audio tokens per window {s['audio_tokens']}")

    with tempfile.TemporaryDirectory() as tmp:
        clips = make_clips(Path(tmp), args.tiny)
        extract(model, clips[:1], args.tiny, device)  # warm-up
        reset_peak(device)
        items, decode_s, encode_s = extract(model, clips, args.tiny, device)
    print(f"feature extraction: {1 / (decode_s + encode_s):.2f} clips/s ({decode_s:.3f} s decoding + {encode_s:.3f} s encoding "
          f"per clip of {s['clip_seconds']} s, {s['frames']} frames); peak {peak(device)}")

    model.configure_training("finetune", LoraConfig(rank=s["lora"], alpha=2 * s["lora"], dropout=0.05))
    model.to(device)
    if device == "cuda":
        frozen_in_bf16(model)  # as avlib.train does on a GPU
    step = {}
    for checkpointing in (False, True):
        if checkpointing:
            model.llm.activation_checkpointing_enable()
        reset_peak(device)
        seconds, tokens = lora_step(model, items, s["batch"], device)
        step[checkpointing] = seconds
        print(f"LoRA step, batch {s['batch']}, gradient checkpointing {'on' if checkpointing else 'off'}: {seconds:.3f} s, "
              f"{tokens / seconds:,.0f} tokens/s ({tokens // s['batch']} per sample); peak {peak(device)}")
    model.llm.gradient_checkpointing_disable()

    model.eval()
    batch = [dict(items[i % len(items)], answer=None) for i in range(s["batch"])]
    collated = model.collate(batch, with_answers=False)
    collated = {**collated, "input_ids": collated["input_ids"].to(device), "attention_mask": collated["attention_mask"].to(device),
                "video_features": [f.to(device) for f in collated["video_features"]],
                "audio_features": [f.to(device) for f in collated["audio_features"]]}
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        model.generate(collated, max_new_tokens=2)  # warm-up
        sync(device)
        start = time.perf_counter()
        model.llm.generation_config.eos_token_id = None  # random weights: generate the full length
        model.generate(collated, max_new_tokens=s["generate"])
        sync(device)
    generated = s["batch"] * s["generate"]
    print(f"generation: {generated / (time.perf_counter() - start):,.0f} new tokens/s at batch {s['batch']}")

    per_sample_cached = step[False] / s["batch"]
    per_sample_raw = per_sample_cached + decode_s + encode_s
    print(f"one finetuning epoch, per sample: {per_sample_cached:.4f} s from the feature cache vs {per_sample_raw:.4f} s from raw "
          f"media (decode + encode + step)")
    print(f"speedup: {per_sample_raw / per_sample_cached:.1f}x")


if __name__ == "__main__":
    main()
