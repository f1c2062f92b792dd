"""Benchmark: answering the audio-aware benchmark with the finetuned AV model, its LoRA adapters kept apart (as
trained) or merged into the LLM's weights (as `avlib.runtime.for_inference` answers), side by side in one run.

Needs the study's outputs (make repro): stage 1's models and features, stages 2 and 3's AV model, the corpus.
Prints the seconds each way takes on the same questions, their ratio, and how many answers agree.

    python benchmarks/answer_speed.py [--items N] [--rounds R] [--batch B]
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from avlib.config import load_params
from avlib.datasets import read_qa_benchmark
from avlib.evaluate import benchmark_dir, feature_items
from avlib.runtime import configure
from avlib.foundation import MissingData
from avlib.stages import finetuned_parts, load_trained_model, open_cache
from study_paths import study_parser


def main() -> None:
    parser = study_parser(__doc__)
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--items", type=int, default=1200, help="questions, taken evenly across the benchmark")
    parser.add_argument("--rounds", type=int, default=2, help="each way timed this many times, alternating")
    parser.add_argument("--batch", type=int, default=None, help="answers per batch (default: evaluate.batch_size)")
    args = parser.parse_args()
    params = load_params(args.params)
    configure(params.runtime)
    try:
        trained = finetuned_parts(params, args.runs, "av")
    except MissingData as err:
        raise SystemExit(str(err)) from None
    apart = load_trained_model(params, args.foundation, trained)
    cache = open_cache(params, apart, args.data, args.features)
    data = Path(args.data)
    items = feature_items(read_qa_benchmark(benchmark_dir(data, "audio_aware") / "qa.json", data / "clips"), cache)
    items = items[:: max(1, len(items) // args.items)][: args.items]
    merged = copy.deepcopy(apart).merge_lora()
    batch, cfg = args.batch or params.evaluate.batch_size, params.evaluate
    ways = {"adapters apart": apart, "adapters merged": merged}
    seconds = {name: [] for name in ways}
    answers = {}
    for _ in range(args.rounds):
        for name, model in ways.items():
            start = time.perf_counter()
            answers[name] = model.answer(items, batch, cfg.max_new_tokens, cfg.temperature)
            seconds[name].append(time.perf_counter() - start)
    best = {name: min(s) for name, s in seconds.items()}
    print(f"{len(items)} audio-aware questions, batches of {batch}, best of {args.rounds} rounds:")
    for name, s in best.items():
        print(f"  {name:16s} {s:6.2f} s  ({1000 * s / len(items):.2f} ms an answer)")
    print(f"  merged / apart: {best['adapters merged'] / best['adapters apart']:.2f}x the time")
    same = sum(a == b for a, b in zip(answers["adapters apart"], answers["adapters merged"]))
    print(f"  the same answer both ways: {same} of {len(items)}")


if __name__ == "__main__":
    main()
