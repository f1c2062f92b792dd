"""Benchmark: where the finetuned models' answer position looks, block by block and head by head.

The direction of motion lives only in the order of the T temporal tokens (`docs/design.md`, section 4). A
linear probe finds it there at every depth of the LLM, and not at the position whose next token is the
answer. This shows why: for each block and head of each finetuned model, the share of that position's
attention weight on the text (system prompt, roles, question), on the temporal, spatial and audio tokens,
and on each temporal token in order (`avlib.probes.answer_attention`), averaged over the test questions of
one kind. A head can read the side of the motion only by weighing the temporal tokens by their place: its
row of frame weights is then uneven (early frames against late ones); an even row gives the frames' average,
which holds the axis and not the side.

Reads the study as `make repro` left it (or one seed of `make spread`: --runs runs/spread/seed1); trains
nothing.

    python benchmarks/answer_attention.py [--kind direction] [--items 256] [--runs runs]
"""

from __future__ import annotations

from pathlib import Path

from avlib.config import load_params
from avlib.datasets import read_qa_benchmark
from avlib.evaluate import benchmark_dir, feature_items
from avlib.probes import ANSWER_PARTS, answer_attention
from avlib.runtime import configure
from avlib.stages import finetuned_parts, load_trained_model, open_cache
from study_paths import study_parser


def main() -> None:
    parser = study_parser(__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs", help="the study's trained stages 2-4 (or runs/spread/seedN)")
    parser.add_argument("--kind", default="direction", help="which questions of the audio-aware benchmark to ask")
    parser.add_argument("--items", type=int, default=256, help="at most this many test questions of that kind")
    args = parser.parse_args()
    if args.items < 1:
        parser.error(f"--items must be at least 1, got {args.items}")
    params = load_params(args.params)
    configure(params.runtime)
    path = benchmark_dir(Path(args.data), "audio_aware") / "qa.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; run `make repro` first")
    questions = read_qa_benchmark(path, Path(args.data) / "clips")
    examples = [e for e in questions if e.kind == args.kind]
    if not examples:
        raise SystemExit(f"no {args.kind!r} questions in {path}; its kinds are {', '.join(sorted({e.kind for e in questions}))}")
    for variant in ("av", "vision_only"):
        model = load_trained_model(params, args.foundation, finetuned_parts(params, args.runs, variant), use_audio=variant == "av")
        items = feature_items(examples[: args.items], open_cache(params, model, args.data, args.features))
        rows = answer_attention(model, items, params.model.vision.num_frames)
        print(f"\n{variant}: {len(items)} {args.kind} questions ({args.runs}); share of the answer position's attention")
        print("| block | head | " + " | ".join(ANSWER_PARTS) + " | each temporal token, in order |")
        print("|---|---|" + "---|" * len(ANSWER_PARTS) + "---|")
        for r in rows:
            print(f"| {r['block']} | {r['head']} | " + " | ".join(f"{r[part]:.3f}" for part in ANSWER_PARTS)
                  + " | " + " ".join(f"{w:.3f}" for w in r["frames"]) + " |")


if __name__ == "__main__":
    main()
