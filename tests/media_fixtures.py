"""Media files made the way real ones are, for tests: any container, codec and keyframe spacing.

`encode` writes a file whose every frame carries its own index as a grid of
black and white cells (`frame_index` reads it back, robust to lossy codecs),
so a test can check that a sampled frame is the one on screen at its time.
Unlike `avlib.media.write_media` (the corpus writer: fixed codecs, bit-exact),
this one exposes what varies in the wild: the encoder's keyframe interval or
its default, variable frame rate, streams that start late or end early,
channel counts and sample rates, and containers without durations.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CELL, COLUMNS, ROWS = 16, 4, 3  # 12 bits: frame indices up to 4095
WIDTH, HEIGHT = CELL * COLUMNS, CELL * ROWS


def indexed_frame(index: int) -> np.ndarray:
    """(HEIGHT, WIDTH, 3) uint8: bit k of `index` is cell k, white for 1."""
    bits = [(index >> k) & 1 for k in range(COLUMNS * ROWS)]
    cells = np.array(bits, np.uint8).reshape(ROWS, COLUMNS) * 255
    return np.repeat(np.repeat(cells, CELL, 0), CELL, 1)[..., None].repeat(3, 2)


def frame_index(frame: np.ndarray) -> int:
    """The index `indexed_frame` drew into a decoded (H, W, 3) frame of any size."""
    height, width = frame.shape[:2]
    index = 0
    for k in range(COLUMNS * ROWS):
        row, col = divmod(k, COLUMNS)
        y0, y1 = (row * height) // ROWS, ((row + 1) * height) // ROWS
        x0, x1 = (col * width) // COLUMNS, ((col + 1) * width) // COLUMNS
        core = frame[y0 + (y1 - y0) // 4 : y1 - (y1 - y0) // 4, x0 + (x1 - x0) // 4 : x1 - (x1 - x0) // 4]
        index |= int(core.mean() > 128) << k
    return index


@dataclass
class Spec:
    """One file to make. Times are seconds on the file's timeline."""

    suffix: str = ".mp4"
    video_codec: str | None = "libx264"
    audio_codec: str | None = "aac"
    seconds: float = 4.0  # of video
    fps: int = 10
    keyframe_seconds: float | None = 1.0  # None: the encoder's default
    frame_times: list[float] | None = None  # variable frame rate: when each frame starts
    video_start: float = 0.0
    audio_seconds: float | None = None  # default: as long as the video
    audio_start: float = 0.0
    sample_rate: int = 16000
    channels: int = 1
    amplitude: float = 0.4
    options: dict = field(default_factory=dict)  # muxer options, e.g. fragmented MP4

    def times(self) -> list[float]:
        """When each frame appears, on the file's timeline."""
        own = self.frame_times or [i / self.fps for i in range(round(self.seconds * self.fps))]
        return [self.video_start + t for t in own]

    def video_end(self) -> float:
        return self.times()[-1] + 1 / self.fps

    def frame_on_screen(self, t: float) -> int:
        """The index of the frame shown at time t (the last to start at or before it)."""
        return max(0, bisect_right(self.times(), t + 1e-9) - 1)


TONE_HZ = 440.0


def tone(spec: Spec) -> np.ndarray:
    """(C, S) float32: the same sine on every channel."""
    seconds = spec.audio_seconds if spec.audio_seconds is not None else spec.seconds
    t = np.arange(round(seconds * spec.sample_rate)) / spec.sample_rate
    wave = (spec.amplitude * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    return np.repeat(wave[None], spec.channels, 0)


_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def encode(path: Path, spec: Spec) -> Path:
    """Write `spec` to `path` with PyAV's FFmpeg."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options=spec.options) as container:
        vstream = astream = None
        if spec.video_codec:
            vstream = container.add_stream(spec.video_codec, rate=spec.fps)
            vstream.width, vstream.height = WIDTH, HEIGHT
            vstream.pix_fmt = "yuvj420p" if spec.video_codec == "mjpeg" else "yuv420p"
            time_base = Fraction(1, spec.fps)
            if spec.frame_times or spec.video_start:  # timestamps off the frame grid need a finer clock
                time_base = vstream.time_base = vstream.codec_context.time_base = Fraction(1, 1000)
            if spec.keyframe_seconds is not None:
                vstream.codec_context.gop_size = max(1, round(spec.fps * spec.keyframe_seconds))
            if spec.video_codec == "libx264" and spec.keyframe_seconds is not None:
                keyint = max(1, round(spec.fps * spec.keyframe_seconds))
                vstream.codec_context.options = {"x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0"}
            if spec.video_codec in ("mpeg4", "libvpx", "libvpx-vp9", "mjpeg"):
                vstream.bit_rate = 2_000_000
        if spec.audio_codec:
            astream = container.add_stream(spec.audio_codec, rate=spec.sample_rate, layout=_LAYOUTS[spec.channels])
        if vstream is not None:
            for index, t in enumerate(spec.times()):
                frame = av.VideoFrame.from_ndarray(indexed_frame(index), format="rgb24")
                frame.pts = round(t / time_base)
                frame.time_base = time_base
                container.mux(vstream.encode(frame))
            container.mux(vstream.encode(None))
        if astream is not None:
            audio = tone(spec)
            chunk = astream.codec_context.frame_size or 1024
            layout = astream.layout.name
            resampler = av.AudioResampler(format=astream.codec_context.format.name, layout=layout, rate=astream.rate)
            first = round(spec.audio_start * astream.rate)
            for offset in range(0, audio.shape[1], chunk):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, offset : offset + chunk]), format="fltp", layout=layout)
                frame.sample_rate = astream.rate
                frame.pts = first + offset
                frame.time_base = Fraction(1, astream.rate)
                for converted in resampler.resample(frame):
                    container.mux(astream.encode(converted))
            container.mux(astream.encode(None))
    return path
