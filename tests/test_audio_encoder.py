import numpy as np
import pytest
import torch
import whisper

from avlib.audio_encoder import AudioEncoder, first_window, log_mel


@pytest.fixture
def encoder(make_model) -> AudioEncoder:
    return make_model().audio_encoder  # 1 s windows, 4 tokens per window, width 32


def test_log_mel_matches_whisper_per_window():
    audio = torch.randn(16000) * 0.1
    ours = log_mel(audio[None], 80)[0]
    reference = whisper.log_mel_spectrogram(audio, n_mels=80)
    assert ours.shape == (80, 100)
    torch.testing.assert_close(ours, reference)


def test_log_mel_is_independent_of_other_windows():
    quiet, loud = torch.randn(16000) * 0.01, torch.randn(16000) * 10
    alone = log_mel(quiet[None], 80)
    together = log_mel(torch.stack([quiet, loud]), 80)[:1]
    torch.testing.assert_close(alone, together)


def test_first_window_is_cut_or_padded_with_silence_to_the_window():
    audio = np.arange(1, 40001, dtype=np.float32)  # 2.5 s
    assert torch.equal(first_window(audio, 2.0), torch.arange(1, 32001, dtype=torch.float32))
    padded = first_window(audio[:8000], 1.0)
    assert padded.shape == (16000,) and torch.equal(padded[:8000], torch.from_numpy(audio[:8000])) and not padded[8000:].any()
    assert torch.equal(first_window(None, 0.5), torch.zeros(8000))


@pytest.mark.parametrize(
    "seconds, windows",
    [(0.0, 0), (0.3, 1), (1.0, 1), (2.5, 3)],
)
def test_window_count_and_token_shapes(encoder, seconds, windows):
    (tokens,) = encoder([np.zeros(int(seconds * 16000), dtype=np.float32) + 0.01])
    if windows == 0:
        assert tokens is None  # 0 s of audio is no audio: no tokens at all
    else:
        assert tokens.shape == (windows * 4, 32)


def test_no_audio_gives_no_tokens(encoder):
    assert encoder([None]) == [None]
    assert encoder([None, None]) == [None, None]


def test_long_audio_is_encoded_window_by_window(encoder):
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(40000).astype(np.float32) * 0.1  # 2.5 windows
    (whole,) = encoder([audio])
    second, third = encoder([audio[16000:32000], audio[32000:]])
    torch.testing.assert_close(whole[4:8], second)
    torch.testing.assert_close(whole[8:12], third)  # the last window is zero-padded


def test_batch_mixing_with_and_without_audio(encoder):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(16000).astype(np.float32), rng.standard_normal(24000).astype(np.float32)
    batch = encoder([a, None, b, np.zeros(0, dtype=np.float32)])
    assert batch[1] is None and batch[3] is None
    assert batch[0].shape == (4, 32) and batch[2].shape == (8, 32)
    torch.testing.assert_close(batch[2], encoder([b])[0])  # independent of its batch


def test_pooling_is_the_mean_of_encoder_frames(encoder):
    audio = torch.randn(16000) * 0.1
    hidden = encoder.encoder(log_mel(audio[None], 80))  # (1, 50, 32)
    (tokens,) = encoder([audio])
    expected = torch.nn.functional.adaptive_avg_pool1d(hidden.transpose(1, 2), 4).transpose(1, 2)[0]
    torch.testing.assert_close(tokens, expected)
    torch.testing.assert_close(tokens[0], hidden[0, :13].mean(0))  # adaptive bins of 50 frames: [0, 13), ...


def test_window_must_fit_the_encoder():
    enc = whisper.model.AudioEncoder(80, 50, 32, 2, 1)  # takes 100 mel frames = 1 s
    with pytest.raises(ValueError, match=r"window_seconds=2.*takes 100.*set window_seconds to 1"):
        AudioEncoder(enc, window_seconds=2.0, num_audio_tokens=4)
    with pytest.raises(ValueError, match="num_audio_tokens must be in 1..50"):
        AudioEncoder(enc, window_seconds=1.0, num_audio_tokens=64)


def test_stereo_input_is_rejected(encoder):
    with pytest.raises(ValueError, match="mono"):
        encoder([np.zeros((2, 16000), dtype=np.float32)])
