import time

import av
import numpy as np
import pytest

from avlib import media
from avlib.media import MediaError, load_clip, write_media

FPS, SECONDS, RATE = 10, 4, 16000


def indexed_frames(count: int = FPS * SECONDS, size=(48, 64)) -> np.ndarray:
    """Frames whose grey level codes their index (6 levels apart, robust to compression)."""
    return np.stack([np.full((*size, 3), 6 * i + 5, np.uint8) for i in range(count)])


def decoded_index(frames: np.ndarray) -> list[int]:
    return [int(round((f[f.shape[0] // 2, f.shape[1] // 2].mean() - 5) / 6)) for f in frames]


def tone(freq: float = 440.0, seconds: float = SECONDS, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    wave = (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels)


def dominant_frequency(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"])
def test_video_formats_give_frames_from_the_right_times_and_exact_audio(tmp_path, suffix):
    path = write_media(tmp_path / f"clip{suffix}", indexed_frames(), FPS, tone(), RATE)
    clip = load_clip(path, num_frames=8)
    # segment middles at (i + 0.5) * 4 s / 8 -> frames 2, 7, 12, ... at 10 fps
    assert decoded_index(clip.frames) == [int((i + 0.5) * SECONDS / 8 * FPS) for i in range(8)]
    np.testing.assert_allclose(clip.frame_times, [int((i + 0.5) * 5) / FPS for i in range(8)], atol=1e-6)
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (8, 48, 64, 3)
    assert clip.audio.dtype == np.float32 and clip.audio.shape == (SECONDS * RATE,)
    assert clip.sample_rate == RATE and clip.duration == pytest.approx(SECONDS, abs=0.01)
    assert (clip.width, clip.height, clip.fps) == (64, 48, FPS)
    assert dominant_frequency(clip.audio, RATE) == pytest.approx(440, abs=2)


@pytest.mark.parametrize("num_frames", [1, 3, 40])
def test_frame_counts(tmp_path, num_frames):
    path = write_media(tmp_path / "clip.mp4", indexed_frames(), FPS)
    clip = load_clip(path, num_frames=num_frames)
    assert decoded_index(clip.frames) == [int((i + 0.5) * SECONDS / num_frames * FPS) for i in range(num_frames)]


def test_frames_are_resized_while_decoding(tmp_path):
    path = write_media(tmp_path / "clip.mp4", indexed_frames(), FPS)
    assert load_clip(path, num_frames=2, frame_size=32).frames.shape == (2, 32, 32, 3)
    assert load_clip(path, num_frames=2, frame_size=(24, 40)).frames.shape == (2, 24, 40, 3)


def test_video_without_audio_track(tmp_path):
    clip = load_clip(write_media(tmp_path / "silent.mp4", indexed_frames(), FPS), num_frames=4)
    assert clip.audio is None and not clip.has_audio and clip.has_video


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a"])
def test_audio_formats(tmp_path, suffix):
    clip = load_clip(write_media(tmp_path / f"sound{suffix}", audio=tone(), sample_rate=RATE))
    assert clip.frames is None and clip.frame_times is None
    assert clip.audio.shape == (SECONDS * RATE,)
    assert dominant_frequency(clip.audio, RATE) == pytest.approx(440, abs=2)


@pytest.mark.parametrize("rate, channels, suffix", [(44100, 2, ".flac"), (8000, 1, ".wav"), (48000, 2, ".m4a"), (22050, 1, ".mp3")])
def test_any_rate_and_layout_is_resampled_to_mono_16k(tmp_path, rate, channels, suffix):
    path = write_media(tmp_path / f"sound{suffix}", audio=tone(1000.0, 3, rate, channels), sample_rate=rate)
    clip = load_clip(path)
    assert clip.audio.shape == (3 * RATE,)
    assert dominant_frequency(clip.audio, RATE) == pytest.approx(1000, abs=2)
    # FFmpeg's downmix, as whisper.load_audio's: two identical channels of 0.4 give 0.4 * 2 / sqrt(2)
    amplitude = 0.4 * (2**0.5 if channels == 2 else 1)
    rms = float(np.sqrt(np.mean(clip.audio[RATE // 2 : -RATE // 2] ** 2)))
    assert rms == pytest.approx(amplitude / 2**0.5, rel=0.1)  # lossy codecs shave a little


@pytest.mark.parametrize("suffix, rate, channels", [(".mp4", RATE, 1), (".m4a", RATE, 1), (".opus", 48000, 1),
                                                    (".m4a", 44100, 2), (".wav", RATE, 1)])
def test_audio_that_needs_no_conversion_skips_the_resampler_for_the_same_samples(tmp_path, monkeypatch, suffix, rate, channels):
    path = write_media(tmp_path / f"sound{suffix}", audio=tone(seconds=3, rate=rate, channels=channels), sample_rate=rate)
    ready = suffix in (".mp4", ".m4a") and rate == RATE and channels == 1  # AAC decodes to float: at 16 kHz mono, nothing to do
    made, resampler = [], av.AudioResampler
    monkeypatch.setattr(av, "AudioResampler", lambda **kwargs: made.append(kwargs) or resampler(**kwargs))
    clip = load_clip(path, num_frames=0)
    assert (not made) == ready
    monkeypatch.setattr(media, "_ready", lambda frame, sample_rate: False)  # every frame through the resampler
    np.testing.assert_array_equal(clip.audio, load_clip(path, num_frames=0).audio)


def test_frames_alone_are_the_frames_of_a_full_read(tmp_path):
    path = write_media(tmp_path / "clip.mp4", indexed_frames(), FPS, tone(seconds=SECONDS + 1), RATE)  # audio outlasts video
    full, frames_only = load_clip(path, num_frames=5, frame_size=32), load_clip(path, num_frames=5, frame_size=32, audio=False)
    assert frames_only.audio is None and not frames_only.has_audio
    np.testing.assert_array_equal(frames_only.frames, full.frames)
    np.testing.assert_array_equal(frames_only.frame_times, full.frame_times)
    assert full.duration == pytest.approx(SECONDS + 1, abs=0.05) and frames_only.duration == pytest.approx(SECONDS, abs=0.05)
    with pytest.raises(MediaError, match="nothing to decode"):
        load_clip(path, num_frames=0, audio=False)
    with pytest.raises(MediaError, match="has no video stream, and audio=False"):
        load_clip(write_media(tmp_path / "sound.flac", audio=tone(), sample_rate=RATE), audio=False)


def test_audio_can_be_read_up_to_a_limit(tmp_path):
    path = write_media(tmp_path / "long.flac", audio=tone(seconds=10), sample_rate=RATE)
    assert load_clip(path, max_audio_seconds=2.5).audio.shape == (40000,)


def test_written_media_is_byte_identical(tmp_path):
    a = write_media(tmp_path / "a.mp4", indexed_frames(), FPS, tone(), RATE).read_bytes()
    b = write_media(tmp_path / "b.mp4", indexed_frames(), FPS, tone(), RATE).read_bytes()
    assert a == b


def _bad_inputs(tmp_path):
    good = write_media(tmp_path / "good.mp4", indexed_frames(), FPS, tone(), RATE)
    data = good.read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("these are not frames\n" * 50)
    (tmp_path / "random.mkv").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "header.mp4").write_bytes(data[:16] + bytes(200) + data[216:])
    write_media(tmp_path / "voice.mp4", audio=tone(), sample_rate=RATE)  # a .mp4 holding audio only
    (tmp_path / "folder.mp4").mkdir()
    return {
        "missing": (tmp_path / "nope.mp4", {}, "no such file"),
        "folder": (tmp_path / "folder.mp4", {}, "is a folder"),
        "empty": (tmp_path / "empty.mp4", {}, "is empty"),
        "text": (tmp_path / "notes.mp4", {}, ""),
        "random bytes": (tmp_path / "random.mkv", {}, ""),
        "truncated": (tmp_path / "truncated.mp4", {}, ""),
        "broken header": (tmp_path / "header.mp4", {}, ""),
        "no video stream": (tmp_path / "voice.mp4", {}, "no video stream"),
        "absurd frame size": (good, {"frame_size": 100000}, "frame_size"),
        "negative frames": (good, {"num_frames": -1}, "num_frames"),
        "absurd sample rate": (good, {"sample_rate": 10}, "sample_rate"),
    }


BAD = ["missing", "folder", "empty", "text", "random bytes", "truncated", "broken header", "no video stream",
       "absurd frame size", "negative frames", "absurd sample rate"]


@pytest.mark.parametrize("case", BAD)
def test_bad_inputs_raise_media_error_naming_the_file(tmp_path, case):
    path, kwargs, reason = _bad_inputs(tmp_path)[case]
    start = time.monotonic()
    with pytest.raises(MediaError) as err:
        load_clip(path, **kwargs)
    assert time.monotonic() - start < 10
    assert str(path) in str(err.value) and reason in str(err.value)


def test_audio_only_mp4_is_fine_when_no_frames_are_asked_for(tmp_path):
    path = write_media(tmp_path / "voice.mp4", audio=tone(), sample_rate=RATE)
    clip = load_clip(path, num_frames=0)
    assert clip.frames is None and clip.audio.shape == (SECONDS * RATE,)


def test_writer_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="cannot write '.xyz'"):
        write_media(tmp_path / "a.xyz", audio=tone())
    with pytest.raises(ValueError, match="holds audio only"):
        write_media(tmp_path / "a.wav", indexed_frames())
