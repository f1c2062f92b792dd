"""Speech from text with espeak-ng, driven through ctypes (no apt package needed).

`espeakng-loader` ships libespeak-ng and its voice data. espeak-ng keeps
synthesis state in static variables that outlive an utterance and even
`espeak_Terminate` (pitch flutter, an echo buffer, noise phases): the same text
spoken twice in one process comes out different. So every call loads a fresh
instance of the library, speaks, and unloads it again (about 10 ms); speech is
then a pure function of (text, voice, rate, pitch), which keeps the synthetic
corpus reproducible. espeak-ng is not thread-safe: calls are serialised.
"""

from __future__ import annotations

import _ctypes
import ctypes
import threading

import espeakng_loader
import numpy as np

SAMPLE_RATE = 22050  # espeak-ng's output rate
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH = 1, 2, 3
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_lock = threading.Lock()

# English speakers: espeak-ng's language voices with its stock variants.
VOICES = ("en-us", "en-us+m3", "en-us+f2", "en-us+f4", "en+m1", "en+f3", "en-us+m7", "en+f1")


class SpeechError(RuntimeError):
    """espeak-ng refused a request (unknown voice, failed synthesis)."""


def speak(text: str, voice: str = VOICES[0], rate: int = 175, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Synthesise `text`: (float32 mono samples in [-1, 1], sample rate 22050).

    rate: words per minute (80..450); pitch: 0..99.
    """
    if not text.strip():
        raise ValueError("cannot speak an empty text")
    if not 80 <= rate <= 450:
        raise ValueError(f"rate must be 80..450 words per minute, got {rate}")
    if not 0 <= pitch <= 99:
        raise ValueError(f"pitch must be 0..99, got {pitch}")
    chunks: list[np.ndarray] = []

    def collect(wav, count, events):
        if count > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    callback = _CALLBACK(collect)
    with _lock:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_Synth.argtypes = [
                ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
            ]
            rate_hz = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
            if rate_hz != SAMPLE_RATE:
                raise SpeechError(f"espeak-ng failed to initialise (returned {rate_hz})")
            lib.espeak_SetSynthCallback(callback)
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise SpeechError(f"espeak-ng has no voice {voice!r}; try one of {', '.join(VOICES)}")
            lib.espeak_SetParameter(_RATE, rate, 0)
            lib.espeak_SetParameter(_PITCH, pitch, 0)
            lib.espeak_SetParameter(_VOLUME, 100, 0)
            lib.espeak_ng_SetRandSeed(ctypes.c_long(0))  # breath and noise sources draw from it
            encoded = text.encode("utf-8") + b"\0"
            status = lib.espeak_Synth(encoded, len(encoded), 0, 1, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            if status != 0:
                raise SpeechError(f"espeak-ng failed on {text!r} (status {status})")
        finally:
            lib.espeak_Terminate()
            _ctypes.dlclose(lib._handle)  # the next call starts from fresh static state
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return samples.astype(np.float32) / 32768.0, SAMPLE_RATE
