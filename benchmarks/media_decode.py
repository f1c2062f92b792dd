"""Benchmark: sampling 8 frames by seeking vs decoding every frame.

Two 25 fps H.264 clips at --size (default 320x240): 10 s with a keyframe every
second (dense, where seeking pays), and 60 s with a single keyframe (sparse, as
real uploads can be: nothing to seek to, so sampling must cost no more than one
pass of decoding). Both methods return the same 8 frames (checked); each is
timed --repeats times, interleaved, and the best time is kept.

--content camera (default): a smooth scene panning, a moving object and sensor
noise, like real footage. --content noise: pure noise, the worst case, where
keyframes are incompressible and their decoding dominates either way.

    python benchmarks/media_decode.py [--size 320x240] [--repeats 7] [--content camera|noise]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from avlib.media import load_clip, write_media


def decode_everything(path: Path, num_frames: int, convert_all: bool) -> np.ndarray:
    """The naive way: decode every frame (optionally converting each to RGB), then pick."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        span = float(stream.duration * stream.time_base)
        decoded = [(f.time, f.to_ndarray(format="rgb24") if convert_all else f) for f in container.decode(stream)]
    targets = [(i + 0.5) * span / num_frames for i in range(num_frames)]
    picked = []
    for t in targets:
        frame = [f for time_, f in decoded if time_ <= t + 1e-6][-1]
        picked.append(frame if convert_all else frame.to_ndarray(format="rgb24"))
    return np.stack(picked)


def make_frames(content: str, width: int, height: int, count: int = 250) -> np.ndarray:
    rng = np.random.default_rng(0)
    if content == "noise":
        base = rng.integers(0, 256, (height, width * 2, 3), dtype=np.uint8)
        return np.stack([np.roll(base, 4 * i, axis=1)[:, :width] for i in range(count)])
    # A smooth scene twice the frame's width (low-frequency noise, upsampled), panned.
    coarse = rng.uniform(0, 255, (height // 16 + 2, width // 8 + 2, 3))
    rows = np.linspace(0, coarse.shape[0] - 1.001, height)
    cols = np.linspace(0, coarse.shape[1] - 1.001, width * 2)
    r0, c0 = rows.astype(int), cols.astype(int)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    scene = (coarse[r0][:, c0] * (1 - fr) * (1 - fc) + coarse[r0 + 1][:, c0] * fr * (1 - fc)
             + coarse[r0][:, c0 + 1] * (1 - fr) * fc + coarse[r0 + 1][:, c0 + 1] * fr * fc)
    frames = []
    for i in range(count):
        frame = np.roll(scene, -2 * i, axis=1)[:, :width].copy()
        x = int((width - 40) * (0.5 + 0.5 * np.sin(i / 20)))
        frame[height // 3 : height // 3 + 40, x : x + 40] = (230, 40, 40)  # a moving object
        frame += rng.normal(0, 3, frame.shape)  # sensor noise
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(frames)


def measure(path: Path, repeats: int) -> dict[str, float]:
    """Best time in seconds of each method over `repeats` interleaved runs."""
    sampled = load_clip(path, num_frames=8).frames
    assert np.array_equal(sampled, decode_everything(path, 8, True)), "the two methods disagree"
    methods = {
        "sampled (avlib.media.load_clip)": lambda: load_clip(path, num_frames=8),
        "decode all, convert 8": lambda: decode_everything(path, 8, False),
        "decode and convert all": lambda: decode_everything(path, 8, True),
    }
    timings = {name: [] for name in methods}
    for _ in range(repeats):
        for name, run in methods.items():
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--content", choices=("camera", "noise"), default="camera")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    settings = {"dense": (250, 1.0, "10 s, keyframe every 1 s"), "sparse": (1500, 60.0, "60 s, one keyframe")}
    for name, (count, keyframe_seconds, label) in settings.items():
        with tempfile.TemporaryDirectory() as tmp:
            frames = make_frames(args.content, width, height, count)
            path = write_media(Path(tmp) / "clip.mp4", frames, fps=25, keyframe_seconds=keyframe_seconds)
            del frames
            best = measure(path, args.repeats)
        print(f"{name}: {label}, 25 fps, {width}x{height} H.264 ({args.content}); 8 frames; best of {args.repeats}")
        for method, seconds in best.items():
            print(f"  {method:34s} {seconds * 1000:8.1f} ms")
        sampled_time = best["sampled (avlib.media.load_clip)"]
        print(f"{name} speedup vs decode all, convert 8: {best['decode all, convert 8'] / sampled_time:.1f}x")
        print(f"{name} speedup vs decode and convert all: {best['decode and convert all'] / sampled_time:.1f}x")


if __name__ == "__main__":
    main()
