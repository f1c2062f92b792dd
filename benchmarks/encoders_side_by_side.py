"""Benchmark: stage 1's miniature Whisper and SigLIP trained one after the other on runtime.threads, or side by
side (the Whisper in a second process, one thread each: foundation.side_by_side), in one run.

Needs the corpus (make data). Each model trains for a fraction of its profile's steps (--fraction), so that the
two ways take minutes, not a quarter of an hour; both ways run the same steps. Prints each way's seconds, their
ratio, and each way's held-out scores (the weights differ: one thread sums in another order than two).

    python benchmarks/encoders_side_by_side.py [--fraction 0.125] [--params params.yaml] [--data data]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from avlib.config import load_params
from avlib.foundation import require_corpus, train_encoders_side_by_side
from avlib.recipes import corpus_texts, train_siglip, train_whisper
from avlib.runtime import configure
from avlib.tokenizer import train_tokenizer


def shortened(params, fraction: float):
    """params with the Whisper's and the SigLIP's steps and warm-ups scaled by `fraction`."""
    def scale(cfg):
        return dataclasses.replace(cfg, steps=max(1, round(cfg.steps * fraction)), warmup=max(1, round(cfg.warmup * fraction)))
    foundation = params.foundation
    return dataclasses.replace(params, foundation=dataclasses.replace(
        foundation, whisper=scale(foundation.whisper), siglip=scale(foundation.siglip)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data", help="the corpus")
    parser.add_argument("--fraction", type=float, default=0.125, help="of each model's training steps")
    args = parser.parse_args()
    if not 0 < args.fraction <= 1:
        raise SystemExit(f"--fraction must be in (0, 1], got {args.fraction}")
    params = shortened(load_params(args.params), args.fraction)
    configure(params.runtime)
    root = require_corpus(args.data, params.corpus)
    tokenizer = train_tokenizer(corpus_texts(root, "train"), params.model.tiny.vocab_size)
    quiet = lambda *a: None  # noqa: E731
    print(f"Whisper {params.foundation.whisper.steps} steps, SigLIP {params.foundation.siglip.steps} steps "
          f"({args.fraction:g} of the profile's):")
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        _, whisper_alone = train_whisper(root, params, tokenizer, quiet)
        _, siglip_alone = train_siglip(root, params, tokenizer, quiet)
        one_after = time.perf_counter() - start
        start = time.perf_counter()
        whisper_side, siglip_side, _ = train_encoders_side_by_side(root, params, tokenizer, Path(scratch) / "w.pt", quiet)
        side = time.perf_counter() - start
    print(f"  one after the other, {params.runtime.threads or 'default'} threads: {one_after:6.1f} s "
          f"(Whisper WER {whisper_alone['wer']:.3f}, SigLIP recall@1 {siglip_alone['recall_at_1']:.3f})")
    print(f"  side by side, one thread each:    {side:6.1f} s "
          f"(Whisper WER {whisper_side['wer']:.3f}, SigLIP recall@1 {siglip_side['recall_at_1']:.3f})")
    print(f"  side by side / one after the other: {side / one_after:.2f}x the time")


if __name__ == "__main__":
    main()
