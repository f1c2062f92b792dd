"""Reading and writing audio-visual media with PyAV (its wheel carries FFmpeg; no ffmpeg program).

`load_clip` decodes only what the model uses: `num_frames` frames, one from the
middle of each of that many equal segments of the video (seeking to them where
they are far apart, decoding through where they are close), each converted and
resized as it is decoded; and the audio track, streamed through a resampler to
16 kHz mono at its exact length. Nothing else of the file is kept in memory.

Every failure to read a file, whatever its cause, is a `MediaError` that names
the file and says what is wrong with it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".flv",
                  ".3gp", ".ogv", ".wmv")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")
# FFmpeg's demuxer for text art: it turns any text file into a "video" stream. A text file is not media.
_TEXT_DEMUXERS = {"tty"}
MAX_SIDE = 16384  # larger frames are not video we can use, whatever the header says
MAX_FRAMES = 4096
SEEK_AHEAD_SECONDS = 1.0  # a target further ahead than this may be reached by seeking rather than decoding through


class MediaError(ValueError):
    """A media file cannot be read as asked; the message names the file and the reason."""


@dataclass
class Clip:
    """What the model needs of one media file."""

    path: str
    frames: np.ndarray | None  # (T, H, W, 3) uint8 RGB; None for a file without video
    frame_times: np.ndarray | None  # (T,) seconds from the start: the time each frame is shown
    audio: np.ndarray | None  # (S,) float32 mono at sample_rate; None when there is no audio stream (or none was asked for)
    sample_rate: int
    duration: float  # seconds
    width: int = 0  # of the source video
    height: int = 0
    fps: float = 0.0

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @property
    def has_video(self) -> bool:
        return self.frames is not None


def load_clip(
    path: str | Path,
    num_frames: int = 8,
    frame_size: int | tuple[int, int] | None = None,
    sample_rate: int = 16000,
    *,
    max_audio_seconds: float | None = None,
    audio: bool = True,
    require_video: bool | None = None,
    timeout: float = 120.0,
) -> Clip:
    """Sampled frames and the audio track of a video or audio file.

    num_frames: frames to sample (0: decode no video). frame_size: resize each
    frame to (size, size) or (height, width) while decoding. max_audio_seconds:
    stop reading audio there. audio: False decodes no audio (`clip.audio` is
    None and the duration is the video's). require_video: whether a missing
    video stream is an error; by default it is for video file suffixes and not
    for audio ones. timeout: seconds before decoding gives up.
    """
    path = Path(path)
    deadline = time.monotonic() + timeout
    _check_arguments(path, num_frames, frame_size, sample_rate, max_audio_seconds)
    if not audio and num_frames == 0:
        raise MediaError(f"{path}: nothing to decode: num_frames is 0 and audio is False")
    _check_file(path)
    if require_video is None:
        require_video = path.suffix.lower() not in AUDIO_SUFFIXES and num_frames > 0
    try:
        return _load(path, num_frames, frame_size, sample_rate, max_audio_seconds, audio, require_video, deadline)
    except MediaError:
        raise
    except Exception as err:  # PyAV and FFmpeg errors of every kind: the file is unreadable
        raise MediaError(f"{path}: cannot decode: {err}") from err


def _check_arguments(path, num_frames, frame_size, sample_rate, max_audio_seconds) -> None:
    if not 0 <= num_frames <= MAX_FRAMES:
        raise MediaError(f"{path}: num_frames must be 0..{MAX_FRAMES}, got {num_frames}")
    if frame_size is not None:
        sides = (frame_size, frame_size) if isinstance(frame_size, int) else tuple(frame_size)
        if len(sides) != 2 or not all(isinstance(s, int) and 1 <= s <= MAX_SIDE for s in sides):
            raise MediaError(f"{path}: frame_size must be an int or (height, width) in 1..{MAX_SIDE}, got {frame_size!r}")
    if not 1000 <= sample_rate <= 384000:
        raise MediaError(f"{path}: sample_rate must be 1000..384000 Hz, got {sample_rate}")
    if max_audio_seconds is not None and max_audio_seconds <= 0:
        raise MediaError(f"{path}: max_audio_seconds must be positive, got {max_audio_seconds}")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not a media file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: is empty")


def _load(path, num_frames, frame_size, sample_rate, max_audio_seconds, read_audio, require_video, deadline) -> Clip:
    with av.open(str(path), metadata_errors="ignore") as container:
        if container.format.name in _TEXT_DEMUXERS:
            raise MediaError(f"{path}: is text, not audio or video (FFmpeg reads it as '{container.format.name}')")
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise MediaError(f"{path}: has neither a video nor an audio stream (FFmpeg reads it as '{container.format.name}')")
        if video is None and require_video:
            raise MediaError(f"{path}: has no video stream, but frames were asked for (pass num_frames=0 for audio only)")
        if video is None and not read_audio:
            raise MediaError(f"{path}: has no video stream, and audio=False leaves nothing to decode")
        # The file's timeline starts with its earliest stream, as a player's does.
        origin = min(_stream_start(s) for s in (video, audio) if s is not None)
        clip = Clip(str(path), None, None, None, sample_rate, 0.0)
        if video is not None:
            width, height = video.codec_context.width, video.codec_context.height
            if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
                raise MediaError(f"{path}: absurd video dimensions {width}x{height}")
            clip.width, clip.height = width, height
            clip.fps = float(video.average_rate or video.guessed_rate or 0)
            with _Probe(path, video.index) as probe:
                span = _video_span(path, video, probe, deadline)
                clip.duration = _stream_start(video) - origin + span
                if num_frames:
                    frames, times = _sample_frames(path, container, video, probe, span, num_frames, frame_size, deadline)
                    clip.frames, clip.frame_times = frames, times + (_stream_start(video) - origin)
        if audio is not None and read_audio:
            if clip.frames is None:  # this demuxer has decoded nothing: the audio is read through it
                clip.audio, audio_end = _read_audio(path, container, sample_rate, max_audio_seconds, origin, deadline)
            else:  # decoding the video has moved this demuxer on: a second one reads from the start
                with av.open(str(path), metadata_errors="ignore") as second:
                    clip.audio, audio_end = _read_audio(path, second, sample_rate, max_audio_seconds, origin, deadline)
            clip.duration = max(clip.duration, audio_end)
    return clip


def _seconds(value, time_base) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def _stream_start(stream) -> float:
    return _seconds(stream.start_time, stream.time_base) or 0.0


def _check_deadline(path, deadline) -> None:
    if time.monotonic() > deadline:
        raise MediaError(f"{path}: decoding took too long (is the file damaged?)")


class _Probe:
    """A second demuxer on the same file, to look ahead without disturbing the one that decodes."""

    def __init__(self, path: Path, stream_index: int):
        self.path, self.index, self._container = path, stream_index, None

    def __enter__(self) -> _Probe:
        return self

    def __exit__(self, *exc) -> None:
        if self._container is not None:
            self._container.close()

    def _stream(self):
        if self._container is None:
            self._container = av.open(str(self.path), metadata_errors="ignore")
        return self._container, self._container.streams[self.index]

    def keyframe_before(self, pts: int) -> int | None:
        """The pts where a backward keyframe seek to `pts` lands; None if it lands on no keyframe."""
        container, stream = self._stream()
        try:
            container.seek(pts, stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            return None
        for packet in container.demux(stream):
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is not None:
                return stamp if packet.is_keyframe else None
        return None

    def end(self, path: Path, deadline: float) -> float:
        """Seconds at which the stream's last frame ends: its packets read from the last keyframe on."""
        container, stream = self._stream()
        period = 1.0 / float(stream.average_rate or stream.guessed_rate or 25)
        for far_ahead in (True, False):  # from the last keyframe if the file can seek there, else from the start
            try:
                container.seek(2**62 if far_ahead else 0, stream=stream, backward=True, any_frame=False)
            except av.FFmpegError:
                continue
            end = None
            for packet in container.demux(stream):
                _check_deadline(path, deadline)
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is not None:
                    length = float(packet.duration * stream.time_base) if packet.duration else period
                    end = max(end or 0.0, float(stamp * stream.time_base) + length)
            if end is not None:
                return end
        return 0.0


def _video_span(path, stream, probe: _Probe, deadline) -> float:
    """Seconds from the video stream's start to the end of its last frame.

    From the stream's own header, else from its last packets; never from the
    container, whose duration is that of its longest stream (audio may outlast video).
    """
    span = _seconds(stream.duration, stream.time_base)
    if not span:
        span = probe.end(path, deadline) - _stream_start(stream)
    if span <= 0:
        raise MediaError(f"{path}: the video stream has no duration")
    return span


def _sample_frames(path, container, stream, probe: _Probe, span, num_frames, frame_size, deadline):
    """The frame on screen at the middle of each of `num_frames` equal segments: (T, H, W, 3), (T,).

    Times are seconds from the video stream's start. The stream is decoded
    forward; a target more than a second ahead is reached by seeking only when
    the keyframe that seek would land on lies past the frames already decoded
    (a second demuxer looks it up), so sparse keyframes never send the decoder
    back over frames it has seen. Only the chosen frames are converted to RGB.
    (FFmpeg's skip_frame=NONREF saved under 10 % of the decoding time on
    H.264 here, so it is not used.)
    """
    start = _stream_start(stream)
    targets = [(i + 0.5) * span / num_frames for i in range(num_frames)]
    size = None
    if frame_size is not None:
        size = (frame_size, frame_size) if isinstance(frame_size, int) else tuple(frame_size)
    period = 1.0 / float(stream.average_rate or stream.guessed_rate or 25)
    out: list[np.ndarray | None] = [None] * num_frames
    times = np.zeros(num_frames)
    i, previous, previous_time, count, probed, timed = 0, None, -math.inf, 0, -1, True
    frames = container.decode(stream)

    def keep(frame, shown_at: float) -> None:
        nonlocal i
        kwargs = {} if size is None else {"height": size[0], "width": size[1]}
        out[i] = frame.to_ndarray(format="rgb24", **kwargs)
        times[i] = shown_at
        i += 1

    while i < num_frames:
        _check_deadline(path, deadline)
        if timed and previous is not None and probed < i and targets[i] - previous_time > SEEK_AHEAD_SECONDS:
            probed = i  # where a seek for this target lands never changes: look it up once
            goal = int((targets[i] + start) / stream.time_base)
            landing = probe.keyframe_before(goal)
            if landing is not None and previous_time + period / 2 < float(landing * stream.time_base) - start <= targets[i]:
                container.seek(goal, stream=stream, backward=True, any_frame=False)
                frames = container.decode(stream)
                previous, previous_time = None, -math.inf
        frame = next(frames, None)
        if frame is None:
            break
        count += 1
        timed = timed and frame.time is not None  # untimed frames are counted, and then only decoding through is safe
        shown_at = (frame.time - start) if frame.time is not None else (count - 1) * period
        while i < num_frames and shown_at > targets[i] + 1e-6:
            # this frame comes after the target: the one before it was on screen then
            if previous is None:
                keep(frame, shown_at)
            else:
                keep(previous, previous_time)
        previous, previous_time = frame, shown_at
    while i < num_frames:  # past the last frame: it stays on screen to the end
        if previous is None or targets[i] - previous_time > 2 * period + 0.5:
            raise MediaError(
                f"{path}: video ends at {max(previous_time, 0):.2f} s but its header says {span:.2f} s (truncated?)"
            )
        keep(previous, previous_time)
    return np.stack(out), times


def _ready(frame, sample_rate: int) -> bool:
    """Whether a decoded audio frame is already what `_read_audio` returns: 32-bit float, one channel, at sample_rate."""
    return frame.format.name in ("flt", "fltp") and frame.layout.nb_channels == 1 and frame.sample_rate == sample_rate


def _read_audio(path, container, sample_rate, max_audio_seconds, origin, deadline) -> tuple[np.ndarray, float]:
    """The audio track on the file's timeline, mono float32 at sample_rate, exact length; and where it ends (s).

    `origin` is the file's start in stream seconds: samples stamped before it
    are codec priming and dropped; a track that starts later is preceded by
    silence, as a player plays it. Reading stops after max_audio_seconds.
    Channels are mixed down by FFmpeg's default matrix, as `whisper.load_audio`
    (ffmpeg -ac 1) does, and clipped to [-1, 1] as its 16-bit samples are (a
    5.1 mix-down can exceed 1).
    """
    stream = container.streams.audio[0]
    declared = _seconds(stream.duration, stream.time_base)
    # Frames already float mono at the rate asked for are taken as they are: the resampler would copy
    # them unchanged (the same samples, checked on the whole tiny corpus) at a cost of a fifth of the read.
    # From the first frame that needs it on, every frame goes through the resampler, which may buffer.
    resampler = None
    limit = None if max_audio_seconds is None else round(max_audio_seconds * sample_rate)
    chunks, total, offset = [], 0, None
    for frame in container.decode(stream):
        _check_deadline(path, deadline)
        if offset is None:
            offset = round(((frame.time - origin) if frame.time is not None else 0.0) * sample_rate)
            if offset > 0:
                chunks.append(np.zeros(offset, np.float32))
                total += offset
        if resampler is None and _ready(frame, sample_rate):
            pieces = [frame]
        else:
            resampler = resampler or av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            pieces = resampler.resample(frame)
        for piece in pieces:
            chunk = piece.to_ndarray().reshape(-1)
            chunks.append(chunk)
            total += len(chunk)
        if limit is not None and total >= limit + max(0, -offset):
            break
    else:
        if resampler is not None:  # what it still buffers
            chunks += [piece.to_ndarray().reshape(-1) for piece in resampler.resample(None)]
    offset = offset or 0
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    audio = audio[max(0, -offset) :]
    if declared:
        expected = max(0, offset) + round(declared * sample_rate)
        if limit is None and len(audio) < expected - max(sample_rate // 4, round(0.05 * expected)):
            raise MediaError(
                f"{path}: audio ends at {len(audio) / sample_rate:.2f} s but its header says {expected / sample_rate:.2f} s (truncated?)"
            )
        audio = audio[:expected]  # encoders pad the last frame: trim to the declared length
    end = (max(0, offset) / sample_rate + declared) if declared else len(audio) / sample_rate
    if limit is not None:
        audio = audio[:limit]
    return np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32), end


# ------------------------------------------------------------------- writing

# (video codec, audio codec, audio rate or None for any) by container suffix.
_CODECS = {
    ".mp4": ("libx264", "aac", None),
    ".mov": ("libx264", "aac", None),
    ".m4v": ("libx264", "aac", None),
    ".mkv": ("libx264", "libopus", 48000),  # Matroska records Opus's codec delay; AAC's it does not
    ".webm": ("libvpx", "libopus", 48000),
    ".avi": ("mpeg4", "pcm_s16le", None),  # AVI records no encoder delay: keep its audio uncompressed
    ".wav": (None, "pcm_s16le", None),
    ".flac": (None, "flac", None),
    ".mp3": (None, "libmp3lame", None),
    ".ogg": (None, "libopus", 48000),
    ".opus": (None, "libopus", 48000),
    ".m4a": (None, "aac", None),
}


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """(S,) or (C, S) float32 at `rate` -> the same at `target`, through FFmpeg's resampler."""
    if audio.ndim == 1:
        return resample(audio[None], rate, target)[0]
    if rate == target:
        return audio
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, dtype=np.float32), format="fltp", layout=layout)
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=target)
    pieces = [p.to_ndarray() for p in resampler.resample(frame)] + [p.to_ndarray() for p in resampler.resample(None)]
    return np.concatenate(pieces, axis=1)[:, : round(audio.shape[1] * target / rate)]


def write_media(
    path: str | Path,
    frames: np.ndarray | None = None,
    fps: int = 8,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    keyframe_seconds: float = 1.0,
) -> Path:
    """Write a video and/or audio file, codecs chosen by the suffix (.mp4: H.264 + AAC).

    frames: (T, H, W, 3) uint8, H and W even; audio: (S,) mono or (C, S)
    float32 in [-1, 1]. Keyframes every `keyframe_seconds`. Same inputs, same
    machine: same bytes (single-threaded, bit-exact encoders and muxer).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _CODECS:
        raise ValueError(f"cannot write {suffix!r}; supported: {', '.join(_CODECS)}")
    video_codec, audio_codec, audio_rate = _CODECS[suffix]
    if frames is not None and video_codec is None:
        raise ValueError(f"{suffix} holds audio only; write frames to a video suffix ({', '.join(VIDEO_SUFFIXES)})")
    if frames is None and audio is None:
        raise ValueError("nothing to write: give frames, audio or both")
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "+faststart"} if suffix in (".mp4", ".mov", ".m4v", ".m4a") else {}
    with av.open(str(path), "w", options=options, container_options={"fflags": "+bitexact"}) as container:
        vstream = astream = None
        if frames is not None:
            frames = np.asarray(frames, dtype=np.uint8)
            _, height, width, _ = frames.shape
            vstream = container.add_stream(video_codec, rate=fps)
            vstream.width, vstream.height = width, height
            vstream.pix_fmt = "yuv420p"
            keyint = max(1, round(fps * keyframe_seconds))
            vstream.codec_context.gop_size = keyint
            vstream.codec_context.options = {"flags": "+bitexact"}
            if video_codec in ("mpeg4", "libvpx"):
                vstream.bit_rate = max(1_000_000, width * height * fps * 2)  # their defaults are blurry
            if video_codec == "libx264":
                # mbtree reads memory it has not written on small frames: output then varies
                # from call to call. Without it, x264 is a pure function of its input.
                vstream.codec_context.options = {
                    "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:threads=1:mbtree=0", "preset": "medium",
                }
        if audio is not None:
            audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
            rate = audio_rate or sample_rate
            audio = resample(audio, sample_rate, rate)
            astream = container.add_stream(audio_codec, rate=rate, layout="mono" if audio.shape[0] == 1 else "stereo")
            astream.codec_context.options = {"flags": "+bitexact"}
        if vstream is not None:
            for index, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index
                container.mux(vstream.encode(frame))
            container.mux(vstream.encode(None))
        if astream is not None:
            sample_format = astream.codec_context.format.name
            chunk = astream.codec_context.frame_size or 1024
            resampler = av.AudioResampler(format=sample_format, layout=astream.layout.name, rate=astream.rate)
            for offset in range(0, audio.shape[1], chunk):
                piece = np.ascontiguousarray(audio[:, offset : offset + chunk])
                frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=astream.layout.name)
                frame.sample_rate = astream.rate
                frame.pts = offset
                frame.time_base = Fraction(1, astream.rate)
                for converted in resampler.resample(frame):
                    container.mux(astream.encode(converted))
            container.mux(astream.encode(None))
    return path
