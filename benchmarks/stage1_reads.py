"""Benchmark: stage 1's three reads of the corpus, the way it reads now and the way it read before.

Stage 1 decodes the corpus three times: the Whisper's first audio windows (`recipes._mels`), the SigLIP's
frames (`recipes.frame_captions`) and the feature cache's frames and audio (`features.extract`). Now audio
that decodes to float mono at 16 kHz (the corpus's AAC) skips FFmpeg's resampler, and the SigLIP's read
decodes no audio. Before, every audio frame went through the resampler and every read decoded the audio.
(Audio-only reads now also go through one demuxer instead of two; that part is not switched off here.)
Each read runs on every --every'th file of data/, both ways in turn, --rounds times; the best time of each
is kept, and both ways must give the same arrays.

    python benchmarks/stage1_reads.py [--every 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from avlib import media
from avlib.config import load_params


def same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.dtype == b.dtype and np.array_equal(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    params = load_params(args.params)
    root = Path(args.data)
    clips = [root / "clips" / f"{c['name']}.mp4" for c in json.loads((root / "clips.json").read_text())][:: args.every]
    sounds = sorted((root / "audio").iterdir())[:: args.every]
    window, size = params.model.audio.window_seconds, params.model.tiny.image_size
    frames, siglip_frames = params.model.vision.num_frames, params.foundation.siglip.frames_per_clip
    reads = {  # name: (files, load_clip's arguments now, before)
        "whisper: first audio window": (clips + sounds, {"num_frames": 0, "max_audio_seconds": window}, {}),
        "siglip: frames": (clips, {"num_frames": siglip_frames, "frame_size": size, "audio": False}, {"audio": True}),
        "features: frames and audio": (clips, {"num_frames": frames, "frame_size": size}, {}),
    }
    ready = media._ready
    best = {}
    for _ in range(args.rounds):
        for name, (files, now, before) in reads.items():
            out = {}
            for way in ("before", "now"):
                media._ready = ready if way == "now" else (lambda frame, sample_rate: False)
                start = time.perf_counter()
                out[way] = [media.load_clip(f, **(now | before if way == "before" else now)) for f in files]
                best[name, way] = min(best.get((name, way), float("inf")), time.perf_counter() - start)
            media._ready = ready
            for a, b in zip(out["before"], out["now"]):
                assert same(a.frames, b.frames), f"{name}: {a.path}: the frames differ"
                assert "audio" in now or same(a.audio, b.audio), f"{name}: {a.path}: the audio differs"
    print(f"{len(clips)} clips and {len(sounds)} sound files of {root}/ (every {args.every}th), best of {args.rounds} rounds")
    print(f"{'read':32s} {'before':>8s} {'now':>8s}  ratio")
    for name, (files, _, _) in reads.items():
        b, n = best[name, "before"], best[name, "now"]
        print(f"{name:32s} {b:7.2f}s {n:7.2f}s  {n / b:.2f}x   ({len(files)} files)")
    total_b, total_n = (sum(best[name, way] for name in reads) for way in ("before", "now"))
    print(f"{'all three':32s} {total_b:7.2f}s {total_n:7.2f}s  {total_n / total_b:.2f}x   "
          f"(x {args.every} for the whole corpus: {(total_b - total_n) * args.every:.0f} s saved)")


if __name__ == "__main__":
    main()
