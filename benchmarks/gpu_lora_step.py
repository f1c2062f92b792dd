"""Benchmark: one LoRA finetuning step of a phi-2-sized AVLM (random weights, the real architecture).

Inputs as in the paper profile: 829 video tokens (SigLIP so400m width 1152), 64 audio tokens
(Whisper small width 768) and 128 text tokens per sample; phi-2's shape (2560 wide, 32 layers,
vocabulary 51200); LoRA rank 128 on every attention and MLP projection; bf16 autocast.

Prints tokens/s and peak memory at batch 1, then doubles the batch until memory runs out and
prints the largest batch that fit. Stays under about 5 minutes on one GPU.

    python benchmarks/gpu_lora_step.py                 # on the GPU
    python benchmarks/gpu_lora_step.py --tiny          # a tiny configuration on the CPU (what the tests run)
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import open_clip
import torch
import whisper
from transformers import PhiConfig, PhiForCausalLM

from avlib.audio_encoder import AudioEncoder
from avlib.config import LoraConfig
from avlib.model import AVLM, SIGLIP_PREPROCESS
from avlib.tokenizer import train_tokenizer
from avlib.vision_encoder import VisionEncoder, tiny_siglip_name

WORDS = "the a red blue circle square moves left right voice says apple three beeps what which colour shape".split()


def build(tiny: bool, device: str, gradient_checkpointing: bool):
    torch.manual_seed(0)
    tokenizer = train_tokenizer([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 20, 400)
    if tiny:
        llm_cfg = PhiConfig(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                            partial_rotary_factor=0.5, max_position_embeddings=2048)
        vision_width, audio_width, lora_rank, patch, size = 48, 32, 8, 8, 32
    else:
        # phi-2's published configuration (microsoft/phi-2 config.json)
        llm_cfg = PhiConfig(vocab_size=51200, hidden_size=2560, intermediate_size=10240, num_hidden_layers=32, num_attention_heads=32,
                            partial_rotary_factor=0.4, max_position_embeddings=2048, resid_pdrop=0.1)
        vision_width, audio_width, lora_rank, patch, size = 1152, 768, 128, 14, 378
    with torch.device(device):  # 2.7 B parameters: initialise them where they will live
        llm = PhiForCausalLM(llm_cfg).to(torch.bfloat16 if device == "cuda" else torch.float32)
    # The encoders are frozen and their features given here, so one block each keeps the model small.
    speech = whisper.model.AudioEncoder(80, 1500, audio_width, 4, 0)
    name = tiny_siglip_name(vision_width, 1, 4, patch, size)
    clip = open_clip.CustomTextCLIP(vision_width, {"image_size": size, "timm_model_name": name, "timm_model_pretrained": False,
                                                   "timm_pool": "map", "timm_proj": "none"},
                                    {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1})
    model = AVLM(AudioEncoder(speech, 30.0, 64), VisionEncoder(clip.visual, {"size": size, **SIGLIP_PREPROCESS}, feature_layer=-1),
                 llm, tokenizer, projector="mlp2x_gelu")
    model.configure_training("finetune", LoraConfig(rank=lora_rank, alpha=2 * lora_rank, dropout=0.05))
    if gradient_checkpointing:
        model.llm.activation_checkpointing_enable()
    return model.to(device), vision_width, audio_width


def make_batch(model, batch: int, vision_width: int, audio_width: int, text_tokens: int, video_tokens: int, audio_tokens: int) -> dict:
    """Token ids laid out as the template lays them out (text, video slots, audio slots, text, answer), exact counts."""
    g = torch.Generator().manual_seed(0)
    vocab = model.llm.config.vocab_size
    prefix, answer = text_tokens // 4, text_tokens // 4
    middle = text_tokens - prefix - answer
    row = (torch.randint(0, model.video_token_id, (prefix,), generator=g).tolist() + [model.video_token_id] * video_tokens
           + [model.audio_token_id] * audio_tokens + torch.randint(0, model.video_token_id, (middle + answer,), generator=g).tolist())
    input_ids = torch.tensor([row] * batch)
    labels = torch.full_like(input_ids, -100)
    labels[:, -answer:] = input_ids[:, -answer:]
    assert max(row) < vocab
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
            "video_features": [torch.randn(video_tokens, vision_width, generator=g) for _ in range(batch)],
            "audio_features": [torch.randn(audio_tokens, audio_width, generator=g) for _ in range(batch)]}


def step_time(model, batch: dict, device: str, steps: int) -> tuple[float, int]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    args = (batch["input_ids"].to(device), batch["attention_mask"].to(device),
            [f.to(device) for f in batch["video_features"]], [f.to(device) for f in batch["audio_features"]])
    labels = batch["labels"].to(device)
    model.train()
    timings = []
    for _ in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(*args, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    return min(timings[1:]), batch["input_ids"].numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny configuration on the CPU")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--budget-seconds", type=float, default=240)
    args = parser.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    began = time.monotonic()
    model, vision_width, audio_width = build(args.tiny, device, args.gradient_checkpointing)
    video_tokens, audio_tokens, text_tokens = (16 + 4, 8, 32) if args.tiny else (829, 64, 128)
    shape = (vision_width, audio_width, text_tokens, video_tokens, audio_tokens)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device: {name}; LLM {model.llm.config.hidden_size} wide x {model.llm.config.num_hidden_layers} layers; "
          f"{trainable / 1e6:.1f} M of {total / 1e6:.1f} M parameters train; gradient checkpointing: {args.gradient_checkpointing}")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds, tokens = step_time(model, make_batch(model, 1, *shape), device, args.steps)
    print(f"sequence: {tokens} tokens ({video_tokens} video + {audio_tokens} audio + {text_tokens} text)")
    print(f"batch 1: {seconds:.3f} s/step, {tokens / seconds:,.0f} tokens/s")
    if device == "cuda":
        print(f"batch 1 peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    largest, batch = 1, 2
    while batch <= args.max_batch and time.monotonic() - began < args.budget_seconds:
        try:
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            seconds, tokens = step_time(model, make_batch(model, batch, *shape), device, 1)
        except torch.cuda.OutOfMemoryError:
            print(f"batch {batch}: out of memory")
            break
        peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device == "cuda" else ""
        print(f"batch {batch}: {seconds:.3f} s/step, {tokens / seconds:,.0f} tokens/s{peak}")
        largest, batch = batch, batch * 2
    print(f"largest batch that fit: {largest} (tried up to {min(batch, args.max_batch)})")


if __name__ == "__main__":
    main()
