"""The Bunny chat template with media placeholders, labels, padding and batching.

One sample renders as (DESIGN.md section 1)

    {SYSTEM} USER: <video>\\n<audio>\\n{question} ASSISTANT: {answer}<|endoftext|>

`<video>` and `<audio>` are single tokens of the tokenizer. Each is expanded to
exactly as many copies as its modality has feature vectors, so the model can
later fill those slots one for one (`AVLM.embed`). A sample without audio (no
audio track, or the vision-only twin) has no `<audio>` line at all: no slot is
ever filled with silence pretending to be audio.

Only the answer and its end-of-turn token are supervised; every other position,
media slots included, carries `IGNORE_INDEX`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

IGNORE_INDEX = -100
VIDEO_TOKEN = "<video>"
AUDIO_TOKEN = "<audio>"
END_OF_TURN = "<|endoftext|>"
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_PLACEHOLDER = re.compile(f"({re.escape(VIDEO_TOKEN)}|{re.escape(AUDIO_TOKEN)})")


def render_prompt(question: str, has_video: bool = True, has_audio: bool = False) -> str:
    """The prompt text up to the assistant's turn, one placeholder per modality."""
    media = (f"{VIDEO_TOKEN}\n" if has_video else "") + (f"{AUDIO_TOKEN}\n" if has_audio else "")
    return f"{SYSTEM} USER: {media}{question} ASSISTANT:"


def media_token_ids(tokenizer) -> tuple[int, int]:
    """(video_token_id, audio_token_id); raises if the tokenizer lacks them."""
    hint = "; call avlib.tokenizer.add_media_tokens(tokenizer) first"
    return _token_id(tokenizer, VIDEO_TOKEN, hint), _token_id(tokenizer, AUDIO_TOKEN, hint)


def _token_id(tokenizer, token: str, hint: str = "") -> int:
    """The id of a single-token string; raises if the tokenizer does not know it."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or tokenizer.convert_ids_to_tokens(token_id) != token:
        raise ValueError(f"tokenizer has no {token} token{hint}")
    return token_id


def encode(
    tokenizer,
    question: str,
    answer: str | None,
    num_video_tokens: int,
    num_audio_tokens: int,
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one sample; `answer=None` leaves the assistant turn open.

    Each placeholder becomes `num_*_tokens` copies of its token id; a count of 0
    drops that modality's line from the prompt.
    """
    if num_video_tokens < 0 or num_audio_tokens < 0:
        raise ValueError(f"media token counts must be >= 0, got video={num_video_tokens} audio={num_audio_tokens}")
    if _PLACEHOLDER.search(question) or (answer and _PLACEHOLDER.search(answer)):
        raise ValueError(f"text must not contain {VIDEO_TOKEN} or {AUDIO_TOKEN}: {question!r}")
    video_id, audio_id = media_token_ids(tokenizer)
    counts = {VIDEO_TOKEN: (video_id, num_video_tokens), AUDIO_TOKEN: (audio_id, num_audio_tokens)}
    prompt = render_prompt(question, has_video=num_video_tokens > 0, has_audio=num_audio_tokens > 0)
    input_ids: list[int] = []
    for piece in _PLACEHOLDER.split(prompt):
        if piece in counts:
            token_id, count = counts[piece]
            input_ids += [token_id] * count
        elif piece:
            input_ids += tokenizer.encode(piece, add_special_tokens=False)
    labels = [IGNORE_INDEX] * len(input_ids)
    if answer is not None:
        answer_ids = tokenizer.encode(" " + answer, add_special_tokens=False) + [end_of_turn_id(tokenizer)]
        input_ids += answer_ids
        labels += answer_ids
    return input_ids, labels


def end_of_turn_id(tokenizer) -> int:
    return _token_id(tokenizer, END_OF_TURN)


def pad_id(tokenizer) -> int:
    """phi-2 has no pad token; padded positions are masked, so end-of-turn serves."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_of_turn_id(tokenizer)


def pad(sequences: Sequence[Sequence[int]], value: int, side: str = "right") -> torch.Tensor:
    """(B, L) long tensor, L the longest sequence."""
    if side not in ("right", "left"):
        raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
    length = max(len(s) for s in sequences)
    out = torch.full((len(sequences), length), value, dtype=torch.long)
    for i, seq in enumerate(sequences):
        if len(seq):
            if side == "right":
                out[i, : len(seq)] = torch.tensor(seq)
            else:
                out[i, length - len(seq) :] = torch.tensor(seq)
    return out


def _present(features: torch.Tensor | None) -> torch.Tensor | None:
    return None if features is None or features.shape[0] == 0 else features


def collate(
    samples: Sequence[dict],
    tokenizer,
    use_audio: bool = True,
    with_answers: bool = True,
) -> dict:
    """Batch samples of pooled features into model inputs.

    Each sample: `question`, `answer` (optional when `with_answers` is False),
    `video_features` (Nv, Dv) and `audio_features` (Na, Da), either None when
    the sample lacks that modality (audio-only pretraining has no video).
    `use_audio=False` is the vision-only twin: audio is left out of the prompt
    and the batch exactly as for a clip without an audio track.

    Returns input_ids, attention_mask, labels (B, L), and the per-sample
    feature lists `video_features` and `audio_features` (None where absent).
    Training batches pad on the right; generation batches (no answers) on the
    left so every prompt ends where generation starts.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    ids, labels, videos, audios = [], [], [], []
    for sample in samples:
        video = _present(sample.get("video_features"))
        audio = _present(sample.get("audio_features")) if use_audio else None
        answer = sample.get("answer") if with_answers else None
        if with_answers and answer is None:
            raise ValueError(f"sample without an answer in a training batch: {sample.get('question')!r}")
        sample_ids, sample_labels = encode(
            tokenizer,
            sample["question"],
            answer,
            num_video_tokens=0 if video is None else video.shape[0],
            num_audio_tokens=0 if audio is None else audio.shape[0],
        )
        ids.append(sample_ids)
        labels.append(sample_labels)
        videos.append(video)
        audios.append(audio)
    side = "right" if with_answers else "left"
    input_ids = pad(ids, pad_id(tokenizer), side)
    attention_mask = pad([[1] * len(s) for s in ids], 0, side)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": pad(labels, IGNORE_INDEX, side),
        "video_features": videos,
        "audio_features": audios,
    }
