"""Typed records for every split, readers for the real formats, and a torch Dataset.

Every source, synthetic or real, becomes a list of `Example`s: one media file
(a video, an audio file or an image), one question and its answer, and what the
question needs. Readers:

    synthetic corpus        read_corpus_split(root, name)
    LibriSpeech             read_librispeech(folder)          speaker/chapter/*.trans.txt + *.flac
    AudioCaps               read_audiocaps(csv, audio_folder) audiocap_id,youtube_id,start_time,caption
    Clotho                  read_clotho(csv, audio_folder)    file_name,caption_1..caption_5
    VideoInstruct-100K      read_videoinstruct(json, videos)  [{video_id, q, a}]
    Video-ChatGPT benchmark read_video_chatgpt(json, videos)  [{video_name, Q, A}] / [{video_name, Q1, Q2, A}]
    ActivityNet-QA          read_activitynet_qa(q_json, a_json, videos)
    MUSIC-AVQA              read_music_avqa(json, video_folders) json_update/avqa-{train,val,test}.json

`MediaDataset` loads an example's media (sampled frames, 16 kHz audio);
`collate_media` encodes a batch with the model's frozen encoders and lays it out
through the chat template (`AVLM.collate`).
"""

from __future__ import annotations

import ast
import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from avlib.media import AUDIO_SUFFIXES, VIDEO_SUFFIXES, MediaError, load_clip

NEEDS = ("audio", "visual", "audio-visual")
TRANSCRIBE = "Transcribe the speech."
CAPTION_AUDIO = "Describe the sound."
CAPTION_IMAGE = "Describe the image."
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DataError(ValueError):
    """A dataset file is missing or not in the expected format."""


@dataclass(frozen=True)
class Example:
    """One question about one media file."""

    id: str
    media: Path  # a video, an audio file or an image
    question: str
    answer: str
    needs: str | None = None  # audio | visual | audio-visual, where known
    kind: str = ""  # what is asked (transcript, caption, shape, word, ...)

    def __post_init__(self):
        if self.needs is not None and self.needs not in NEEDS:
            raise DataError(f"{self.id}: needs={self.needs!r} is not one of {NEEDS}")


def _load_json(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def _load_records(path: Path) -> list[dict]:
    """A JSON file holding a list of records (objects)."""
    records = _load_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list of records at the top level, got a {type(records).__name__}; "
                        "is it the right file?")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{path}[{i}]: expected a record (an object), got {record!r:.60}")
    return records


def _require(record: dict, keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}; has {sorted(record)}")


def find_video(folder: Path, name: str) -> Path:
    """The video file called `name` (with or without a suffix) in `folder`."""
    direct = folder / name
    if direct.suffix.lower() in VIDEO_SUFFIXES and direct.is_file():
        return direct
    for suffix in VIDEO_SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return folder / f"{name}.mp4"  # reported as missing when it is loaded


# ------------------------------------------------------------ synthetic corpus

CORPUS_SPLITS = ("speech_to_text", "audio_captions", "image_captions", "video_instructions_train", "video_instructions_val")


def read_corpus_split(root: str | Path, name: str) -> list[Example]:
    """A split written by `avlib.synth` under root/splits/."""
    root = Path(root)
    if name not in CORPUS_SPLITS:
        raise DataError(f"unknown corpus split {name!r}; valid: {', '.join(CORPUS_SPLITS)}")
    path = root / "splits" / f"{name}.json"
    if not path.is_file():
        raise DataError(f"{path}: missing; build the corpus with `python -m avlib.synth --out {root}` (or `dvc pull`)")
    records = _load_json(path)
    if name == "speech_to_text":
        return [Example(r["id"], root / r["media"], TRANSCRIBE, r["text"], "audio", "transcript") for r in records]
    if name == "audio_captions":
        return [Example(r["id"], root / r["media"], CAPTION_AUDIO, r["caption"], "audio", "audio caption") for r in records]
    if name == "image_captions":
        return [Example(r["id"], root / r["media"], CAPTION_IMAGE, r["caption"], "visual", "image caption") for r in records]
    return [
        Example(f"{Path(r['video']).stem}/{i}", root / r["video"], r["question"], r["answer"], r["needs"], r["kind"])
        for i, r in enumerate(records)
    ]


def read_qa_benchmark(path: str | Path, videos: str | Path) -> list[Example]:
    """A short-answer benchmark laid out as [{video_name, Q, A, needs?, kind?}]: the synthetic audio-aware one,
    or a prepared MUSIC-AVQA or ActivityNet-QA test split."""
    path, videos = Path(path), Path(videos)
    examples = []
    records = _load_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list of {{video_name, Q, A}} records, got a {type(records).__name__}")
    for i, r in enumerate(records):
        _require(r, ("video_name", "Q", "A"), f"{path}[{i}]")
        examples.append(Example(f"{r['video_name']}/{i}", find_video(videos, r["video_name"]), r["Q"], str(r["A"]), r.get("needs"),
                                r.get("kind", "")))
    return examples


# ------------------------------------------------------------------ real data


def read_librispeech(folder: str | Path) -> list[Example]:
    """LibriSpeech layout: SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt with lines 'UTTERANCE-ID TEXT', beside UTTERANCE-ID.flac."""
    folder = Path(folder)
    transcripts = sorted(folder.rglob("*.trans.txt"))
    if not transcripts:
        raise DataError(f"{folder}: no *.trans.txt files; expected the LibriSpeech layout SPEAKER/CHAPTER/*.trans.txt")
    examples = []
    for transcript in transcripts:
        for number, line in enumerate(transcript.read_text().splitlines(), 1):
            if not line.strip():
                continue
            utterance, _, text = line.partition(" ")
            if not text:
                raise DataError(f"{transcript}:{number}: expected 'UTTERANCE-ID TEXT', got {line!r}")
            examples.append(Example(utterance, transcript.parent / f"{utterance}.flac", TRANSCRIBE, text.lower(), "audio", "transcript"))
    return examples


def _read_csv(path: Path, columns: Sequence[str]) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; has {reader.fieldnames}")
        return list(reader)


def read_audiocaps(csv_path: str | Path, audio_folder: str | Path, suffix: str = ".wav") -> list[Example]:
    """AudioCaps CSV (audiocap_id, youtube_id, start_time, caption); audio saved as {youtube_id}_{start_time}{suffix}."""
    rows = _read_csv(Path(csv_path), ("audiocap_id", "youtube_id", "start_time", "caption"))
    folder = Path(audio_folder)
    return [
        Example(f"audiocaps/{r['audiocap_id']}", folder / f"{r['youtube_id']}_{r['start_time']}{suffix}",
                CAPTION_AUDIO, r["caption"].strip(), "audio", "audio caption")
        for r in rows
    ]


def read_clotho(csv_path: str | Path, audio_folder: str | Path) -> list[Example]:
    """Clotho captions CSV (file_name, caption_1 .. caption_5): five examples per audio file."""
    columns = ("file_name", *(f"caption_{i}" for i in range(1, 6)))
    rows = _read_csv(Path(csv_path), columns)
    folder = Path(audio_folder)
    return [
        Example(f"clotho/{r['file_name']}/{i}", folder / r["file_name"], CAPTION_AUDIO, r[f"caption_{i}"].strip(), "audio", "audio caption")
        for r in rows
        for i in range(1, 6)
    ]


def read_videoinstruct(json_path: str | Path, video_folder: str | Path) -> list[Example]:
    """VideoInstruct-100K: [{video_id, q, a}]."""
    path, folder = Path(json_path), Path(video_folder)
    examples = []
    for i, r in enumerate(_load_records(path)):
        _require(r, ("video_id", "q", "a"), f"{path}[{i}]")
        examples.append(Example(f"{r['video_id']}/{i}", find_video(folder, r["video_id"]), r["q"], r["a"], None, "instruction"))
    return examples


def read_video_chatgpt(json_path: str | Path, video_folder: str | Path) -> list[Example]:
    """A Video-ChatGPT benchmark file: generic/temporal [{video_name, Q, A}] or consistency [{video_name, Q1, Q2, A}].

    A consistency item gives two examples, ids ending in /q1 and /q2.
    """
    path, folder = Path(json_path), Path(video_folder)
    examples = []
    for i, r in enumerate(_load_records(path)):
        _require(r, ("video_name", "A"), f"{path}[{i}]")
        video = find_video(folder, r["video_name"])
        if "Q" in r:
            examples.append(Example(f"{r['video_name']}/{i}", video, r["Q"], r["A"], None, path.stem))
        elif "Q1" in r and "Q2" in r:
            examples.append(Example(f"{r['video_name']}/{i}/q1", video, r["Q1"], r["A"], None, path.stem))
            examples.append(Example(f"{r['video_name']}/{i}/q2", video, r["Q2"], r["A"], None, path.stem))
        else:
            raise DataError(f"{path}[{i}]: neither a 'Q' nor a 'Q1'/'Q2' pair; has {sorted(r)}")
    return examples


def read_activitynet_qa(questions: str | Path, answers: str | Path, video_folder: str | Path) -> list[Example]:
    """ActivityNet-QA: test_q.json [{question, question_id, video_name}] joined with test_a.json [{answer, question_id, type}].

    Videos are named v_{video_name} in ActivityNet downloads.
    """
    q_path, a_path, folder = Path(questions), Path(answers), Path(video_folder)
    answer_of = {}
    for i, r in enumerate(_load_records(a_path)):
        _require(r, ("answer", "question_id"), f"{a_path}[{i}]")
        answer_of[r["question_id"]] = r
    examples = []
    for i, r in enumerate(_load_records(q_path)):
        _require(r, ("question", "question_id", "video_name"), f"{q_path}[{i}]")
        if r["question_id"] not in answer_of:
            raise DataError(f"{q_path}[{i}]: question_id {r['question_id']!r} has no answer in {a_path}")
        name = r["video_name"] if r["video_name"].startswith("v_") else f"v_{r['video_name']}"
        question = r["question"].strip()
        if not question:
            raise DataError(f"{q_path}[{i}]: question {r['question_id']!r} is empty")
        # The question as the dataset gives it (lower case, no question mark): its published scores were made so.
        examples.append(Example(r["question_id"], find_video(folder, name), question, str(answer_of[r["question_id"]]["answer"]),
                                None, f"type {answer_of[r['question_id']].get('type', '?')}"))
    return examples


# MUSIC-AVQA (Li et al., CVPR 2022): the modality in each record's `type` -> what the question needs.
MUSIC_AVQA_NEEDS = {"Audio": "audio", "Visual": "visual", "Audio-Visual": "audio-visual"}
MUSIC_AVQA_PROMPT = "Answer the question using a single word or phrase."
_PLACEHOLDER = re.compile(r"<[^<>]*>")


def music_avqa_question(record: dict, where: str) -> str:
    """The question text with its <Object>-style placeholders filled from templ_values, in order."""
    text = str(record["question_content"]).strip()
    raw = record.get("templ_values") or "[]"
    try:
        values = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        try:  # the official loader reads it with ast.literal_eval: single quotes happen
            values = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            raise DataError(f"{where}: templ_values {raw!r} is not a list") from None
    holes = _PLACEHOLDER.findall(text)
    if not isinstance(values, list) or len(values) < len(holes):
        raise DataError(f"{where}: {len(holes)} placeholder(s) in {text!r} but templ_values is {raw!r}")
    values = iter(values)
    return _PLACEHOLDER.sub(lambda _: str(next(values)), text)


def read_music_avqa(json_path: str | Path, video_folders: Sequence[str | Path]) -> list[Example]:
    """MUSIC-AVQA annotations: [{video_id, question_id, type, question_content, templ_values, question_deleted, anser}].

    `type` is a JSON list [modality, question kind]; modality Audio / Visual /
    Audio-Visual becomes `needs`. Deleted questions (question_deleted != 0) are
    left out. The question asks for a single word or phrase, as the answers are
    (a closed set: yes/no, counts, instruments, left/right/middle, ...). Videos
    are <video_id>.mp4 in the first of `video_folders` that has it.
    """
    path = Path(json_path)
    folders = [Path(f) for f in video_folders]
    records = _load_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list of question records, got a {type(records).__name__}")
    examples = []
    for i, r in enumerate(records):
        where = f"{path}[{i}]"
        _require(r, ("video_id", "question_id", "type", "question_content", "anser"), where)
        if r.get("question_deleted", 0):
            continue
        try:
            modality, kind = json.loads(r["type"]) if isinstance(r["type"], str) else r["type"]
        except (json.JSONDecodeError, TypeError, ValueError):
            raise DataError(f"{where}: type {r['type']!r} is not a JSON list [modality, kind]") from None
        if modality not in MUSIC_AVQA_NEEDS:
            raise DataError(f"{where}: modality {modality!r} is not one of {list(MUSIC_AVQA_NEEDS)}")
        video_id = str(r["video_id"])
        media = next((f / f"{video_id}.mp4" for f in folders if (f / f"{video_id}.mp4").is_file()), folders[0] / f"{video_id}.mp4")
        question = f"{music_avqa_question(r, where)} {MUSIC_AVQA_PROMPT}"
        examples.append(Example(str(r["question_id"]), media, question, str(r["anser"]), MUSIC_AVQA_NEEDS[modality], kind))
    return examples


def subsample(examples: list[Example], limit: int | None, seed: int, stratify: bool = False) -> list[Example]:
    """A seeded draw of `limit` examples, in their original order.

    stratify: draw from each `needs` group in proportion to its size (largest
    remainders get the leftover places), so the subset keeps the modality mix.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be 1 or more, got {limit}")
    if limit is None or limit >= len(examples):
        return examples
    rng = np.random.default_rng(seed)
    if not stratify:
        keep = rng.choice(len(examples), size=limit, replace=False)
    else:
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(examples):
            groups.setdefault(str(e.needs), []).append(i)
        exact = {g: limit * len(members) / len(examples) for g, members in groups.items()}
        counts = {g: int(share) for g, share in exact.items()}
        for g in sorted(exact, key=lambda g: exact[g] - counts[g], reverse=True)[: limit - sum(counts.values())]:
            counts[g] += 1
        keep = [i for g in sorted(groups) for i in rng.choice(groups[g], size=counts[g], replace=False)]
    return [examples[i] for i in np.sort(np.asarray(keep, dtype=int))]


# ------------------------------------------------------------------ loading


def load_media(path: Path, num_frames: int, frame_size: int | None, sample_rate: int = 16000) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(frames (T, H, W, 3) uint8 or None, audio (S,) float32 or None) of a video, audio or image file."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                if frame_size:
                    image = image.resize((frame_size, frame_size), Image.BICUBIC)
                return np.array(image)[None], None
        except (OSError, ValueError) as err:
            raise MediaError(f"{path}: cannot read the image: {err}") from err
    clip = load_clip(path, num_frames=0 if suffix in AUDIO_SUFFIXES else num_frames, frame_size=frame_size, sample_rate=sample_rate)
    return clip.frames, clip.audio


class MediaDataset(Dataset):
    """Examples with their media loaded: dicts of id, question, answer, needs, frames, audio."""

    def __init__(self, examples: Sequence[Example], num_frames: int = 8, frame_size: int | None = None, sample_rate: int = 16000):
        self.examples = list(examples)
        self.num_frames, self.frame_size, self.sample_rate = num_frames, frame_size, sample_rate

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        example = self.examples[index]
        frames, audio = load_media(example.media, self.num_frames, self.frame_size, self.sample_rate)
        return {"id": example.id, "question": example.question, "answer": example.answer, "needs": example.needs,
                "frames": frames, "audio": audio}


def collate_media(items: Sequence[dict], model, with_answers: bool = True) -> dict:
    """A batch of `MediaDataset` items -> model inputs: encoders, then the chat template.

    Returns `AVLM.collate`'s batch plus `ids` and `needs`. A model that does not hear (the vision-only
    twin) gets no audio features: its encoder is not run on what it would not read.
    """
    audios = [item["audio"] if model.use_audio else None for item in items]
    video_features, audio_features = model.encode_media([item["frames"] for item in items], audios)
    samples = [
        {"question": item["question"], "answer": item["answer"], "video_features": v, "audio_features": a}
        for item, v, a in zip(items, video_features, audio_features)
    ]
    batch = model.collate(samples, with_answers=with_answers)
    batch["ids"] = [item["id"] for item in items]
    batch["needs"] = [item["needs"] for item in items]
    return batch
