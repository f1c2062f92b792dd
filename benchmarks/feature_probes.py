"""Benchmark: what the cached features still carry, fact by fact, before the LLM sees them.

The study's per-kind accuracy mixes two questions: does the information survive
the frozen encoders and their pooling, and does the LLM learn to use it? This
answers the first. For every fact of a synthetic clip (shape, colour,
background, direction; spoken word, sound, beep count, which comes first) a
linear classifier is trained on the training clips' cached features and scored
on the test clips', beside chance (the most frequent label). Each fact is
probed from several views of the features the LLM receives (`avlib.probes`):

    video: temporal  the T per-frame tokens (patches averaged), concatenated in order
           spatial   the P per-patch tokens (frames averaged), concatenated
           mean      the mean of all T + P tokens
    audio: tokens    the first window's tokens, concatenated in order
           mean      their mean

A fact the best view cannot tell apart better than chance is lost before the
LLM; a fact a view tells well but the models answer poorly is the LLM's (or
the projector's) to learn. A second table takes the direction apart by axis:
the side of the motion (left or right; up or down) from the clips moving along
that axis, read from the first frame's token alone, the last one's, and all of
them in order. Reads the corpus (data/), stage 1's models and the
feature cache as `make repro` left them; trains nothing that is kept.

    python benchmarks/feature_probes.py [--params params.yaml] [--steps 300]
"""

from __future__ import annotations

from avlib.config import load_params
from avlib.probes import AUDIO_FACTS, SIDE_VIEWS, VIDEO_FACTS, VIEWS, clip_views, probe_fact, probe_side
from avlib.runtime import configure
from avlib.stages import load_trained_model, open_cache
from study_paths import study_parser


def main() -> None:
    parser = study_parser(__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per probe")
    args = parser.parse_args()
    params = load_params(args.params)
    configure(params.runtime)
    model = load_trained_model(params, args.foundation, [])
    cache = open_cache(params, model, args.data, args.features)
    try:
        rows = clip_views(args.data, cache, params.model.vision.num_frames, params.model.audio.num_audio_tokens)
    except (FileNotFoundError, KeyError) as err:
        raise SystemExit(f"{err}; run `make repro` first") from None
    print(f"{len(rows['train'])} training and {len(rows['test'])} test clips; {args.steps} steps per probe\n")
    print(f"| fact | chance | {' | '.join(VIEWS)} |")
    print("|---|---|" + "---|" * len(VIEWS))
    for fact in VIDEO_FACTS + AUDIO_FACTS:
        results = [probe_fact(rows, fact, view, args.steps, params.seed) for view in VIEWS]
        chance = next(r["chance"] for r in results if r)
        print(f"| {fact} | {chance:.2f} | " + " | ".join("-" if r is None else f"{r['accuracy']:.2f}" for r in results) + " |")
    sides = probe_side(rows, params.model.vision.num_frames, args.steps, params.seed)
    if sides:
        print(f"\nThe side of the motion, by axis (two sides each)\n\n| axis | test clips | {' | '.join(SIDE_VIEWS)} |")
        print("|---|---|" + "---|" * len(SIDE_VIEWS))
        for axis, result in sides.items():
            print(f"| {axis} | {result['test']} | " + " | ".join(f"{result[view]:.2f}" for view in SIDE_VIEWS) + " |")


if __name__ == "__main__":
    main()
