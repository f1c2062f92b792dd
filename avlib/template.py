"""The Bunny chat template with media placeholders, labels, padding and batching.

One sample renders as (docs/design.md, section 1)

    {SYSTEM} USER: <video>\\n<audio>\\n{question} ASSISTANT: {answer}<|endoftext|>

or, with model.media_order `audio_first`, the `<audio>` line before the
`<video>` one. `<video>` and `<audio>` are single tokens of the tokenizer. Each is expanded to
exactly as many copies as its modality has feature vectors, so the model can
later fill those slots one for one (`AVLM.embed`). A sample without audio (no
audio track, or the vision-only twin) has no `<audio>` line at all: no slot is
ever filled with silence pretending to be audio.

Only the answer and its end-of-turn token are supervised; every other position,
media slots included, carries `IGNORE_INDEX`.

Truncation (model.max_length tokens per sample, model.audio.max_windows audio
windows per clip): media slots are never cut. Audio windows past the limit are
dropped whole, before the prompt is laid out; then, if the sample is still too
long, text is cut from the end, the answer's tail first, then the question's,
as LLaVA and Bunny cut at model_max_length. A sample whose template and media
alone exceed max_length is an error naming both lengths. `collate` counts
what it cut.
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
MEDIA_ORDERS = ("video_first", "audio_first")  # model.media_order
_PLACEHOLDER = re.compile(f"({re.escape(VIDEO_TOKEN)}|{re.escape(AUDIO_TOKEN)})")


def check_media_order(media_order: str) -> str:
    """`media_order` itself; raises naming the valid orders if it is none of them."""
    if media_order not in MEDIA_ORDERS:
        raise ValueError(f"media_order must be one of {', '.join(MEDIA_ORDERS)}, got {media_order!r}")
    return media_order


def render_prompt(question: str, has_video: bool = True, has_audio: bool = False, media_order: str = "video_first") -> str:
    """The prompt text up to the assistant's turn, one placeholder line per modality, in `media_order`."""
    check_media_order(media_order)
    video = f"{VIDEO_TOKEN}\n" if has_video else ""
    audio = f"{AUDIO_TOKEN}\n" if has_audio else ""
    media = video + audio if media_order == "video_first" else audio + video
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


class TooLong(ValueError):
    """A sample's template and media slots alone exceed model.max_length."""


def encode(
    tokenizer,
    question: str,
    answer: str | None,
    num_video_tokens: int,
    num_audio_tokens: int,
    max_length: int | None = None,
    media_order: str = "video_first",
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one sample; `answer=None` leaves the assistant turn open.

    Each placeholder becomes `num_*_tokens` copies of its token id; a count of 0
    drops that modality's line from the prompt. With `max_length`, text is cut
    from the end (answer first, then question) to fit; media slots never are.
    """
    if num_video_tokens < 0 or num_audio_tokens < 0:
        raise ValueError(f"media token counts must be >= 0, got video={num_video_tokens} audio={num_audio_tokens}")
    if _PLACEHOLDER.search(question) or (answer and _PLACEHOLDER.search(answer)):
        raise ValueError(f"text must not contain {VIDEO_TOKEN} or {AUDIO_TOKEN}: {question!r}")
    video_id, audio_id = media_token_ids(tokenizer)
    counts = {VIDEO_TOKEN: (video_id, num_video_tokens), AUDIO_TOKEN: (audio_id, num_audio_tokens)}

    def tokens(text: str) -> list[int]:
        out: list[int] = []
        for piece in _PLACEHOLDER.split(text):
            if piece in counts:
                token_id, count = counts[piece]
                out += [token_id] * count
            elif piece:
                out += tokenizer.encode(piece, add_special_tokens=False)
        return out

    has_video, has_audio = num_video_tokens > 0, num_audio_tokens > 0
    input_ids = tokens(render_prompt(question, has_video, has_audio, media_order))
    answer_ids = [] if answer is None else tokenizer.encode(" " + answer, add_special_tokens=False) + [end_of_turn_id(tokenizer)]
    if max_length is not None and len(input_ids) + len(answer_ids) > max_length:
        # Lay the prompt out in parts to cut the text alone: the head (system, role, media), the question, the tail.
        head = tokens(render_prompt("", has_video, has_audio, media_order).removesuffix(" ASSISTANT:"))
        tail = tokenizer.encode(" ASSISTANT:", add_special_tokens=False)
        room = max_length - len(head) - len(tail)
        if room < 1:
            raise TooLong(f"the template and media slots take {len(head) + len(tail)} tokens, more than model.max_length "
                          f"{max_length}: lower model.audio.max_windows or model.vision.num_frames, or raise model.max_length")
        question_ids = tokenizer.encode(question, add_special_tokens=False)[:room]
        answer_ids = answer_ids[: room - len(question_ids)]
        input_ids = head + question_ids + tail
    labels = [IGNORE_INDEX] * len(input_ids) + answer_ids
    return input_ids + answer_ids, labels


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
    max_length: int | None = None,
    max_audio_windows: int = 0,
    audio_tokens_per_window: int = 1,
    media_order: str = "video_first",
) -> dict:
    """Batch samples of pooled features into model inputs, the media lines in `media_order`.

    Each sample: `question`, `answer` (optional when `with_answers` is False),
    `video_features` (Nv, Dv) and `audio_features` (Na, Da), either None when
    the sample lacks that modality (audio-only pretraining has no video).
    `use_audio=False` is the vision-only twin: audio is left out of the prompt
    and the batch exactly as for a clip without an audio track.

    Returns input_ids, attention_mask, labels (B, L), the per-sample feature
    lists `video_features` and `audio_features` (None where absent), and what
    truncation cut (module docstring): `cut_samples` (text cut) and
    `dropped_audio_windows`.
    Training batches pad on the right; generation batches (no answers) on the
    left so every prompt ends where generation starts.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    ids, labels, videos, audios = [], [], [], []
    cut, dropped = 0, 0
    for sample in samples:
        video = _present(sample.get("video_features"))
        audio = _present(sample.get("audio_features")) if use_audio else None
        if audio is not None and max_audio_windows and audio.shape[0] > max_audio_windows * audio_tokens_per_window:
            dropped += audio.shape[0] // audio_tokens_per_window - max_audio_windows
            audio = audio[: max_audio_windows * audio_tokens_per_window]
        answer = sample.get("answer") if with_answers else None
        if with_answers and answer is None:
            raise ValueError(f"sample without an answer in a training batch: {sample.get('question')!r}")
        sample_ids, sample_labels = encode(
            tokenizer,
            sample["question"],
            answer,
            num_video_tokens=0 if video is None else video.shape[0],
            num_audio_tokens=0 if audio is None else audio.shape[0],
            max_length=max_length,
            media_order=media_order,
        )
        if max_length is not None and len(sample_ids) == max_length:
            cut += len(encode(tokenizer, sample["question"], answer, 0 if video is None else video.shape[0],
                              0 if audio is None else audio.shape[0], media_order=media_order)[0]) > max_length
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
        "cut_samples": cut,
        "dropped_audio_windows": dropped,
    }


def select_rows(batch: dict, rows: Sequence[int], side: str = "right") -> dict:
    """Rows of a batch from `collate` (padded on `side`), cut to the longest of them: ids, mask, labels, features."""
    if side not in ("right", "left"):
        raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
    rows = list(rows)
    width = int(batch["attention_mask"][rows].sum(dim=1).max())
    cut = slice(None, width) if side == "right" else slice(-width, None)
    return ({key: batch[key][rows, cut] for key in ("input_ids", "attention_mask", "labels")}
            | {key: [batch[key][i] for i in rows] for key in ("video_features", "audio_features")})


def split_by_length(batch: dict, groups: int) -> list[dict]:
    """A training batch (right-padded, from `collate`) as up to `groups` batches of its rows sorted by length, each cut
    to its own longest row. Together they hold the same rows and the same supervised tokens, so their summed losses and
    gradients are the batch's, for less padding computed: one soundtrack of two windows no longer lengthens every row."""
    if groups < 1:
        raise ValueError(f"groups must be at least 1, got {groups}")
    if groups == 1:
        return [batch]
    order = torch.argsort(batch["attention_mask"].sum(dim=1), stable=True)
    parts = [select_rows(batch, rows.tolist()) | {"cut_samples": 0, "dropped_audio_windows": 0}
             for rows in torch.tensor_split(order, min(groups, len(order)))]
    # What truncation cut is counted once, with the first part, so that the parts' counts add up to the batch's.
    parts[0] |= {"cut_samples": batch["cut_samples"], "dropped_audio_windows": batch["dropped_audio_windows"]}
    return parts
