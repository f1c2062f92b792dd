"""Benchmark: one finetuning step of the tiny AVLM (params.yaml's tiny model).

Prints seconds per step, samples/s and peak memory, side by side: a step from cached
features as `avlib.train` takes it (the system prompt every row shares computed once,
the rows run in `finetune.length_groups` passes of like length, LM-head logits only
where the next token is supervised), the same step with every row computed whole, in
one pass padded to its longest row, with logits at every position (the model's
`.loss`), with phi-2's five-op `gelu_new` instead of the miniature Phi's fused
`gelu_pytorch_tanh` (the same formula), and a step that also runs the frozen encoders
on already decoded media.

    python benchmarks/train_step.py [--steps 20] [--batch 8] [--device cpu] [--cpu-kernels avx2|native]
    python benchmarks/train_step.py --run [--batch 32]   # after `make repro`

By default the model is built fresh, with a tokenizer of a few words and random
media. With --run it is the pipeline's: stage 1's models and vocabulary, stage 2's
projectors, and the finetuning questions with their cached features, drawn in the
training's own random batches, so the LM head has the study's width and the batches
its mix of lengths (no raw-media step there: the media are not decoded).
The CPU kernels and threads are params.yaml's `runtime` unless --cpu-kernels says otherwise.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from transformers.activations import ACT2FN

from avlib.builders import build_model
from avlib.config import load_params
from avlib.runtime import configure, mkl_branch
from avlib.tokenizer import train_tokenizer
from avlib.template import IGNORE_INDEX, split_by_length
from avlib.train import batch_indices, predicting, supervised_loss

WORDS = "the a red blue green circle square triangle moves left right up down says beep siren knock chime hum".split()
MODES = {"cached": "from cached features (as training runs it)", "whole rows": "the same, no prefix shared",
         "one pass": "the same, in one pass padded to its longest row", "all logits": "the same, logits at every position",
         "gelu_new": "the same, phi-2's five-op gelu_new", "raw": "from raw media (encoders run)"}


def fresh_model(params, batch: int, rng):
    """A model built from params with a toy tokenizer, and random media and questions for one batch."""
    cfg = params.model
    tokenizer = train_tokenizer([" ".join(rng.choice(WORDS, 8)) for _ in range(2000)], cfg.tiny.vocab_size)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer)
    size = cfg.tiny.image_size
    videos = [rng.integers(0, 256, (cfg.vision.num_frames, size, size, 3), dtype=np.uint8) for _ in range(batch)]
    audios = [rng.standard_normal(int(cfg.audio.window_seconds * 16000)).astype(np.float32) * 0.1 for _ in range(batch)]
    questions = [(" ".join(rng.choice(WORDS, 12)), " ".join(rng.choice(WORDS, 6))) for _ in range(batch)]
    return model, videos, audios, questions


def run_batches(params, batch: int, count: int):
    """The pipeline's model after stage 2 and `count` batches of the finetuning questions with cached features."""
    from avlib.features import FeatureDataset
    from avlib.stages import load_trained_model, open_cache, pretrained_parts, stage_examples

    model = load_trained_model(params, "checkpoints/foundation", pretrained_parts(params, "runs/pretrain"))
    dataset = FeatureDataset(stage_examples("data", "finetune", params), open_cache(params, model, "data", "features"))
    return model, [model.collate([dataset[i] for i in batch_indices(len(dataset), batch, k, params.seed)]) for k in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--run", action="store_true", help="the pipeline's model and finetuning data (needs make repro)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cpu-kernels", choices=("avx2", "compatible", "native"), help="default: params.yaml's runtime.cpu_kernels")
    args = parser.parse_args()

    params = load_params()
    if args.cpu_kernels:
        params.runtime.cpu_kernels = args.cpu_kernels
    configure(params.runtime)
    rng = np.random.default_rng(0)
    if args.run:
        model, batches = run_batches(params, args.batch, args.steps)
        modes = {m: MODES[m] for m in MODES if m != "raw"}
    else:
        model, videos, audios, questions = fresh_model(params, args.batch, rng)
        modes = MODES
    model = model.to(args.device)
    model.configure_training("finetune", params.finetune.lora)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    mlps = [m for m in model.llm.modules() if hasattr(m, "activation_fn") and hasattr(m, "fc1")]
    own = {m: m.activation_fn for m in mlps}
    phi2 = ACT2FN["gelu_new"]
    shared_prefix = model.shared_prefix
    if not args.run:
        cached = model.encode_media(videos, audios)

        def collated(from_raw: bool) -> dict:
            features = model.encode_media(videos, audios) if from_raw else cached
            return model.collate([{"question": q, "answer": a, "video_features": v, "audio_features": au}
                                  for (q, a), v, au in zip(questions, *features)])

    def step(mode: str, batch: dict) -> None:
        for mlp in mlps:
            mlp.activation_fn = phi2 if mode == "gelu_new" else own[mlp]
        model.shared_prefix = (lambda *unused: 0) if mode == "whole rows" else shared_prefix
        optimizer.zero_grad()
        if mode == "all logits":
            model(batch["input_ids"].to(args.device), batch["attention_mask"].to(args.device), batch["video_features"],
                  batch["audio_features"], labels=batch["labels"].to(args.device)).loss.backward()
        else:
            groups = 1 if mode == "one pass" else params.finetune.length_groups
            count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            for part in split_by_length(batch, groups):
                at = predicting(part["labels"])
                logits = model(part["input_ids"].to(args.device), part["attention_mask"].to(args.device),
                               part["video_features"], part["audio_features"], logits_at=at)
                (supervised_loss(logits, part["labels"], at, reduction="sum") / count).backward()
        optimizer.step()

    def batch_of(mode: str, k: int) -> dict:
        return batches[k] if args.run else collated(mode == "raw")

    shape = batch_of("cached", 0)["input_ids"].shape
    print(f"device {args.device}, batch {args.batch}, length groups {params.finetune.length_groups}, sequence length {shape[1]}, "
          f"vocabulary {model.llm.config.vocab_size}, torch threads {torch.get_num_threads()}, CPU kernels {torch.backends.cpu.get_cpu_capability()}, "
          f"MKL branch {mkl_branch()}")
    results = {}
    for mode in [*modes, *modes]:  # interleaved, so drift hits all alike
        step(mode, batch_of(mode, 0))  # warm-up
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for k in range(args.steps):
            step(mode, batch_of(mode, k))
        if args.device == "cuda":
            torch.cuda.synchronize()
        results.setdefault(mode, []).append((time.perf_counter() - start) / args.steps)
    best = {mode: min(times) for mode, times in results.items()}
    for mode, label in modes.items():
        print(f"step {label}: {best[mode]:.3f} s/step, {args.batch / best[mode]:.1f} samples/s")
    for mode in ("whole rows", "one pass", "all logits", "gelu_new"):
        print(f"ratio {mode} / cached: {best[mode] / best['cached']:.2f}x")
    x = torch.linspace(-8, 8, 100_001)
    gap = (own[mlps[0]](x) - phi2(x)).abs().max().item()
    print(f"the LLM's {type(own[mlps[0]]).__name__} vs phi-2's gelu_new, largest difference on [-8, 8]: {gap:.1e}")
    if "raw" in best:
        print(f"ratio raw / cached: {best['raw'] / best['cached']:.2f}x")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: {peak_rss:.0f} MiB resident (process)")
    if args.device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
