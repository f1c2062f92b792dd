"""Audio encoder: a frozen Whisper encoder turned into a few tokens per window.

Legend: S samples, W windows, M mel bins, F mel frames per window,
C encoder frames per window (F / 2), D encoder width, N pooled tokens per window.

Audio (16 kHz mono) is cut into consecutive windows of `window_seconds`, the
last one zero-padded, as Whisper reads 30 s at a time; each window becomes a
log-mel spectrogram, goes through the encoder, and its last hidden state is
average-pooled from C frames to N tokens. A clip without audio gives None:
no tokens at all, never silence standing in for a missing track.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import whisper
from torch import nn
from whisper.audio import HOP_LENGTH, N_FFT, SAMPLE_RATE

AudioInput = torch.Tensor | np.ndarray | None


def log_mel(windows: torch.Tensor, n_mels: int) -> torch.Tensor:
    """(W, S) windows -> (W, M, F) Whisper log-mel, normalised per window.

    The same arithmetic as `whisper.log_mel_spectrogram`, batched, with its
    dynamic-range floor (max - 8) taken per window, so a window's features do
    not depend on the other windows or clips in the batch.
    """
    hann = torch.hann_window(N_FFT, device=windows.device)
    stft = torch.stft(windows, N_FFT, HOP_LENGTH, window=hann, return_complex=True)
    power = stft[..., :-1].abs() ** 2  # (W, N_FFT/2+1, F)
    mel = whisper.audio.mel_filters(windows.device, n_mels) @ power  # (W, M, F)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
    return (torch.maximum(log_spec, floor) + 4.0) / 4.0


def first_window(audio: AudioInput, window_seconds: float) -> torch.Tensor:
    """(S,) float32: the first `window_seconds` of a 16 kHz mono clip, zero-padded when shorter; silence for None."""
    samples = round(window_seconds * SAMPLE_RATE)
    audio = torch.zeros(0) if audio is None else torch.as_tensor(audio, dtype=torch.float32)[:samples]
    return F.pad(audio, (0, samples - audio.shape[0]))


class AudioEncoder(nn.Module):
    """Whisper encoder + adaptive average pooling to `num_audio_tokens` per window."""

    def __init__(self, encoder: whisper.model.AudioEncoder, window_seconds: float, num_audio_tokens: int):
        super().__init__()
        self.encoder = encoder
        self.n_mels = encoder.conv1.in_channels
        self.num_audio_tokens = num_audio_tokens
        n_ctx = encoder.positional_embedding.shape[0]
        # Whisper's encoder only accepts exactly 2 * n_ctx mel frames (its positional table).
        samples = window_seconds * SAMPLE_RATE
        if samples != round(samples) or round(samples) != 2 * n_ctx * HOP_LENGTH:
            raise ValueError(
                f"window_seconds={window_seconds} gives {samples / HOP_LENGTH:g} mel frames, but this Whisper "
                f"encoder takes {2 * n_ctx} (n_audio_ctx={n_ctx}); set window_seconds to "
                f"{2 * n_ctx * HOP_LENGTH / SAMPLE_RATE:g} or build the encoder with n_audio_ctx = mel_frames // 2"
            )
        if not 1 <= num_audio_tokens <= n_ctx:
            raise ValueError(f"num_audio_tokens must be in 1..{n_ctx} (encoder frames per window), got {num_audio_tokens}")
        self.window_samples = round(samples)
        self.window_seconds = window_seconds

    @property
    def width(self) -> int:
        return self.encoder.ln_post.normalized_shape[0]

    def num_windows(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.window_samples)

    def windows(self, audio: torch.Tensor) -> torch.Tensor:
        """(S,) -> (W, window_samples), the last window zero-padded."""
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono, shape (samples,), got {tuple(audio.shape)}")
        w = self.num_windows(audio.shape[0])
        return F.pad(audio, (0, w * self.window_samples - audio.shape[0])).view(w, self.window_samples)

    def norms_in_float(self) -> AudioEncoder:
        """Whisper's LayerNorm computes in float32 with its own weights (its Linear and Conv1d cast
        theirs to the input's dtype): after casting the encoder to bf16, put its norms back in float32."""
        for module in self.encoder.modules():
            if isinstance(module, whisper.model.LayerNorm):
                module.float()
        return self

    def forward(self, audios: list[AudioInput]) -> list[torch.Tensor | None]:
        """A batch of 16 kHz mono clips -> per clip (W*N, D) tokens, or None without audio.

        All windows of the batch go through the encoder together.
        """
        device = self.encoder.positional_embedding.device
        clips = [None if a is None else torch.as_tensor(a, dtype=torch.float32, device=device) for a in audios]
        counts = [0 if a is None else self.num_windows(a.shape[0]) for a in clips]
        if sum(counts) == 0:
            return [None] * len(clips)
        windows = torch.cat([self.windows(a) for a, n in zip(clips, counts) if n])  # (ΣW, window_samples)
        mel = log_mel(windows, self.n_mels)  # in float32, as Whisper computes it; the encoder may run in bf16 on a GPU
        hidden = self.encoder(mel.to(self.encoder.conv1.weight.dtype))  # (ΣW, C, D)
        pooled = F.adaptive_avg_pool1d(hidden.transpose(1, 2), self.num_audio_tokens).transpose(1, 2)  # (ΣW, N, D)
        out, start = [], 0
        for n in counts:
            out.append(pooled[start : start + n].reshape(-1, pooled.shape[-1]) if n else None)
            start += n
        return out
