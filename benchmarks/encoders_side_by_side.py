"""Benchmark: stage 1's miniature Whisper and SigLIP trained one after the other in this process, or side by side
(foundation.side_by_side: each in a process of its own, waiting passively at their threads' barriers), and side by
side with the libraries' default waiting, in one run; each model's bits compared with the first way's.

Needs the corpus (make data). Each model trains for a fraction of its profile's steps (--fraction), so that the
ways take minutes, not a quarter of an hour; every way runs the same steps.

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

from avlib import foundation
from avlib.config import load_params
from avlib.integrity import digest
from avlib.recipes import corpus_texts
from avlib.runtime import configure
from avlib.tokenizer import train_tokenizer


def shortened(params, fraction: float):
    """params with the Whisper's and the SigLIP's steps and warm-ups scaled by `fraction`."""
    def scale(cfg):
        return dataclasses.replace(cfg, steps=max(1, round(cfg.steps * fraction)), warmup=max(1, round(cfg.warmup * fraction)))
    f = params.foundation
    return dataclasses.replace(params, foundation=dataclasses.replace(f, whisper=scale(f.whisper), siglip=scale(f.siglip)))


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
    root = foundation.require_corpus(args.data, params.corpus)
    tokenizer = train_tokenizer(corpus_texts(root, "train"), params.model.tiny.vocab_size)
    quiet = lambda *a: None  # noqa: E731
    saved = {"whisper": foundation.WHISPER_FILE, "siglip": foundation.SIGLIP_DIR}
    print(f"Whisper {params.foundation.whisper.steps} steps, SigLIP {params.foundation.siglip.steps} steps "
          f"({args.fraction:g} of the profile's), {params.runtime.threads or 'default'} threads each:")
    with tempfile.TemporaryDirectory() as scratch:
        ways = {"one after the other, here": "here", "side by side, waiting passively": "PASSIVE",
                "side by side, default waiting": None}
        seconds, digests = {}, {}
        for label, how in ways.items():
            out = Path(scratch) / label.replace(" ", "_").replace(",", "")
            out.mkdir()
            start = time.perf_counter()
            if how == "here":
                for name in foundation.ENCODERS:
                    foundation.train_and_save(name, root, params, tokenizer, out, quiet)
            else:
                foundation.train_encoders_side_by_side(root, params, tokenizer, out, quiet, wait_policy=how)
            seconds[label] = time.perf_counter() - start
            digests[label] = {name: digest(out / path) for name, path in saved.items()}
    first = next(iter(ways))
    for label in ways:
        same = "the same bits" if digests[label] == digests[first] else "OTHER BITS"
        print(f"  {label:34s} {seconds[label]:6.1f} s  {seconds[label] / seconds[first]:.2f}x  {same}")


if __name__ == "__main__":
    main()
