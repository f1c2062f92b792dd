"""`load_clip` on the kinds of files people have: containers, codecs, keyframe spacings, odd timelines.

Every frame of every file carries its index in its pixels, so each case checks
that each sampled frame is the one on screen at its target time.
"""

import time

import numpy as np
import pytest

from avlib.media import load_clip
from media_fixtures import TONE_HZ, Spec, encode, frame_index

VFR_TIMES = list(np.round(np.cumsum([0.0] + [0.05, 0.1, 0.2, 0.15] * 10), 3))
FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}

CASES = {
    "mp4 h264 aac, a keyframe every second": Spec(),
    "mp4 h264 aac, every frame a keyframe": Spec(keyframe_seconds=0.1),
    "mp4 h264 aac, the encoder's default keyframes": Spec(seconds=30, keyframe_seconds=None),
    "mp4 h264, one keyframe a minute": Spec(seconds=60, keyframe_seconds=60, audio_codec=None),
    "fragmented mp4, no duration in its header": Spec(seconds=8, keyframe_seconds=2, options=FRAGMENTED),
    "mkv h264 opus stereo 48 kHz, audio outlasts video, keyframes 4 s":
        Spec(".mkv", audio_codec="libopus", sample_rate=48000, channels=2, seconds=12, audio_seconds=15, keyframe_seconds=4),
    "webm vp9 opus, keyframes 10 s": Spec(".webm", "libvpx-vp9", "libopus", seconds=20, keyframe_seconds=10, sample_rate=48000),
    "mov h264 pcm 8 kHz, keyframes 2 s": Spec(".mov", audio_codec="pcm_s16le", sample_rate=8000, seconds=6, keyframe_seconds=2),
    # (FFmpeg's AVI muxer, given MP3, holds the first frame for two periods: its timestamps say so,
    # but this test's frame clock would not. MP3 goes in Matroska here.)
    "avi mpeg4 pcm stereo 44.1 kHz, keyframes 2 s":
        Spec(".avi", "mpeg4", "pcm_s16le", sample_rate=44100, channels=2, seconds=6, keyframe_seconds=2),
    "mkv h264 mp3 22.05 kHz, keyframes 2 s": Spec(".mkv", audio_codec="libmp3lame", sample_rate=22050, seconds=6, keyframe_seconds=2),
    "mpeg-ts h264 aac, keyframes 4 s": Spec(".ts", seconds=10, keyframe_seconds=4),
    "mkv mjpeg flac 5.1 44.1 kHz, loud": Spec(".mkv", "mjpeg", "flac", channels=6, sample_rate=44100, amplitude=0.9),
    "mp4 h264 aac 5.1 48 kHz, loud": Spec(channels=6, sample_rate=48000, amplitude=0.9),
    "mkv variable frame rate": Spec(".mkv", audio_codec="flac", frame_times=VFR_TIMES, seconds=VFR_TIMES[-1] + 0.1),
    "mp4 audio shorter than video": Spec(seconds=6, audio_seconds=2, keyframe_seconds=2),
    "mkv video starts late": Spec(".mkv", audio_codec="flac", video_start=0.5, audio_seconds=4.5),
    "mkv audio starts late": Spec(".mkv", audio_codec="flac", audio_start=1.0, audio_seconds=3),
    "mp4 h264 without audio, keyframes 10 s": Spec(seconds=30, keyframe_seconds=10, audio_codec=None),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("matrix")
    made = {}

    def get(name: str):
        if name not in made:
            made[name] = encode(folder / f"{len(made):02d}{CASES[name].suffix}", CASES[name])
        return made[name]

    return get


def targets(spec: Spec, num_frames: int) -> list[float]:
    """The middles of `num_frames` equal segments of the video, on the file's timeline."""
    span = spec.video_end() - spec.video_start
    return [spec.video_start + (i + 0.5) * span / num_frames for i in range(num_frames)]


def video_delay(clip, spec: Spec) -> np.ndarray:
    """Reported frame times minus the times the fixture gave those frames.

    Some muxers delay the whole video track by the encoder's B-frame reordering
    (fragmented MP4 has no edit list to undo it); the file's own timeline is
    what `load_clip` reports, whatever the delay.
    """
    return clip.frame_times - [spec.times()[spec.frame_on_screen(t)] for t in targets(spec, len(clip.frame_times))]


def dominant_frequency(audio: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("num_frames", [4, 8, 16])
@pytest.mark.parametrize("case", CASES)
def test_each_sampled_frame_is_the_one_on_screen_at_its_time(files, case, num_frames):
    spec = CASES[case]
    start = time.monotonic()
    clip = load_clip(files(case), num_frames=num_frames)
    assert time.monotonic() - start < 10, "sampling must not decode the file over and over"
    assert [frame_index(f) for f in clip.frames] == [spec.frame_on_screen(t) for t in targets(spec, num_frames)]
    delay = video_delay(clip, spec)
    np.testing.assert_allclose(delay, delay[0], atol=2e-3)
    assert 0 <= delay[0] <= 0.3


@pytest.mark.parametrize("case", [name for name, spec in CASES.items() if spec.audio_codec])
def test_audio_sits_on_the_files_timeline_within_range(files, case):
    spec = CASES[case]
    clip = load_clip(files(case), num_frames=2) if spec.video_codec else load_clip(files(case))
    delay = video_delay(clip, spec)[0] if spec.video_codec else 0.0
    audio_seconds = spec.audio_seconds if spec.audio_seconds is not None else spec.seconds
    origin = min(spec.video_start, spec.audio_start)
    lead = spec.audio_start - origin
    # Containers that cannot record a codec's priming and padding (MPEG-TS, AVI, fragmented MP4)
    # give them to the decoder, as they give them to Whisper's loader: up to about 0.12 s more.
    assert len(clip.audio) / 16000 == pytest.approx(lead + audio_seconds + 0.06, abs=0.07)
    assert clip.duration == pytest.approx(max(spec.video_end() + delay, spec.audio_start + audio_seconds + 0.06) - origin, abs=0.07)
    assert np.abs(clip.audio).max() <= 1.0, "the mix-down stays within [-1, 1], as Whisper's 16-bit loader's does"
    body = clip.audio[round((lead + 0.2) * 16000) : round((lead + audio_seconds - 0.2) * 16000)]
    assert dominant_frequency(body) == pytest.approx(TONE_HZ, abs=3)
    if lead:
        assert np.abs(clip.audio[: round((lead - 0.05) * 16000)]).max() < 0.01, "silence before a late track"


def test_a_text_file_is_not_media_whatever_ffmpeg_makes_of_it(tmp_path):
    from avlib.media import MediaError

    path = tmp_path / "notes.txt"
    path.write_text("these are not frames\n" * 50)
    with pytest.raises(MediaError, match="is text, not audio or video"):
        load_clip(path)
