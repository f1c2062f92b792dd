"""Benchmark: what the cached features still carry, fact by fact, before the LLM sees them.

The study's per-kind accuracy mixes two questions: does the information survive
the frozen encoders and their pooling, and does the LLM learn to use it? This
answers the first. For every fact of a synthetic clip (shape, colour,
background, direction; spoken word, sound, beep count, which comes first) a
linear classifier is trained on the training clips' cached features and scored
on the test clips', beside chance (the most frequent label). Each fact is
probed from several views of the features the LLM receives:

    video: temporal  the T per-frame tokens (patches averaged), concatenated in order
           spatial   the P per-patch tokens (frames averaged), concatenated
           mean      the mean of all T + P tokens
    audio: tokens    the first window's tokens, concatenated in order
           mean      their mean

A fact the best view cannot tell apart better than chance is lost before the
LLM; a fact a view tells well but the models answer poorly is the LLM's (or
the projector's) to learn. Reads the corpus (data/), stage 1's models and the
feature cache as `make repro` left them; trains nothing that is kept.

    python benchmarks/feature_probes.py [--params params.yaml] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from avlib.config import load_params
from avlib.runtime import configure
from avlib.stages import load_trained_model, open_cache

VIDEO_FACTS = ("shape", "color", "background", "direction")
AUDIO_FACTS = ("word", "sound", "beeps", "speech_first")
VIEWS = ("video: temporal", "video: spatial", "video: mean", "audio: tokens", "audio: mean")


def views(video: torch.Tensor | None, audio: torch.Tensor | None, frames: int, tokens_per_window: int) -> dict[str, torch.Tensor]:
    """The probed views of one clip's cached features (a view is absent where its modality is)."""
    out = {}
    if video is not None:
        out["video: temporal"] = video[:frames].flatten()
        out["video: spatial"] = video[frames:].flatten()
        out["video: mean"] = video.mean(dim=0)
    if audio is not None:
        out["audio: tokens"] = audio[:tokens_per_window].flatten()
        out["audio: mean"] = audio[:tokens_per_window].mean(dim=0)
    return out


def probe(train_x: torch.Tensor, train_y: list, test_x: torch.Tensor, test_y: list, steps: int, seed: int = 0) -> float:
    """Test accuracy of a softmax regression (standardised inputs, weight decay) trained full-batch with Adam."""
    labels = sorted(set(train_y) | set(test_y), key=str)
    index = {label: i for i, label in enumerate(labels)}
    ytr = torch.tensor([index[y] for y in train_y])
    yte = torch.tensor([index[y] for y in test_y])
    mean, std = train_x.mean(dim=0), train_x.std(dim=0) + 1e-6
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    torch.manual_seed(seed)
    layer = torch.nn.Linear(xtr.shape[1], len(labels))
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(layer(xtr), ytr).backward()
        optimizer.step()
    with torch.no_grad():
        return float((layer(xte).argmax(dim=1) == yte).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--foundation", default="checkpoints/foundation")
    parser.add_argument("--features", default="features")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per probe")
    args = parser.parse_args()
    params = load_params(args.params)
    configure(params.runtime)
    model = load_trained_model(params, args.foundation, [])
    cache = open_cache(params, model, args.data, args.features)
    entries = cache.entries()
    frames, per_window = params.model.vision.num_frames, params.model.audio.num_audio_tokens
    clips = json.loads((Path(args.data) / "clips.json").read_text())
    rows = {"train": [], "test": []}
    for clip in clips:
        split = "train" if clip["name"].startswith("train") else "test"
        entry = entries.get(f"clips/{clip['name']}.mp4")
        if entry is None:
            raise SystemExit(f"clips/{clip['name']}.mp4 is not in the feature cache at {args.features}/; run `make repro` first")
        rows[split].append((clip, views(*cache.load(entry), frames, per_window)))
    print(f"{len(rows['train'])} training and {len(rows['test'])} test clips; {args.steps} steps per probe\n")
    print(f"| fact | chance | {' | '.join(VIEWS)} |")
    print("|---|---|" + "---|" * len(VIEWS))
    for fact in VIDEO_FACTS + AUDIO_FACTS:
        # The clips a fact applies to: every clip for what is seen, clips with a soundtrack for what is heard.
        applies = {split: [(c, v) for c, v in rows[split] if c.get(fact) is not None and (fact in VIDEO_FACTS or c["has_audio"])]
                   for split in rows}
        majority = Counter(c[fact] for c, _ in applies["train"]).most_common(1)[0][0]
        chance = sum(c[fact] == majority for c, _ in applies["test"]) / len(applies["test"])
        cells = []
        for view in VIEWS:
            train = [(c[fact], v[view]) for c, v in applies["train"] if view in v]
            test = [(c[fact], v[view]) for c, v in applies["test"] if view in v]
            if not train or not test:
                cells.append("-")
                continue
            accuracy = probe(torch.stack([x for _, x in train]).float(), [y for y, _ in train],
                             torch.stack([x for _, x in test]).float(), [y for y, _ in test], args.steps, params.seed)
            cells.append(f"{accuracy:.2f}")
        print(f"| {fact} | {chance:.2f} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
