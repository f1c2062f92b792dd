"""The synthetic audio-visual corpus: a small world where some facts are only heard.

    python -m avlib.synth --profile tiny --out data/

Every clip is a real mp4 (H.264 + AAC, a keyframe every second): a coloured
shape moves across a plain background while, on most clips, a voice (espeak-ng)
says a code word and a sound event plays (beeps, a siren, knocking, ...), one
after the other. Some clips have no audio track; some run longer than one audio
window, with the speech crossing the window boundary.

What is said, how many beeps sound and which comes first cannot be seen, so a
vision-only model can only guess them; shape, colour, direction and background
cannot be heard. Every question is labelled with what it needs: `audio`,
`visual` or `audio-visual`.

Everything is drawn from a seeded generator per item, so the corpus is a pure
function of (profile, seed): two builds on the same machine are byte-identical,
however many processes share the work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from avlib.media import resample, write_media
from avlib.tts import VOICES, speak

RATE = 16000
VERSION = 3  # bump when the generator changes what it writes

SHAPES = ("circle", "square", "triangle", "diamond")
COLORS = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 230),
    "yellow": (235, 215, 40), "purple": (150, 60, 200), "orange": (240, 140, 30),
}
BACKGROUNDS = {"black": (15, 15, 15), "gray": (110, 110, 110), "navy": (20, 30, 90), "brown": (90, 60, 30)}
DIRECTIONS = ("left", "right", "up", "down")
WORDS = ("apple", "river", "candle", "tiger", "pencil", "window", "rocket", "garden", "silver", "thunder")
SOUNDS = ("beeps", "siren", "knocking", "whistle", "hum", "noise", "chime")
BEEPS_SHARE = 0.5  # of the soundtracks: beeps, so that counting them is learnt and tested on enough clips
NUMBERS = ("zero", "one", "two", "three", "four")
SENTENCES = ("The word is {}.", "Remember the word {}.", "Listen: {}.", "I say {}.", "{}.", "Your word is {}.")
END_SIDE = {"left": "on the left", "right": "on the right", "up": "at the top", "down": "at the bottom"}


@dataclass(frozen=True)
class Profile:
    train_clips: int
    val_clips: int
    test_clips: int
    speech_clips: int  # speech-to-text pretraining
    sound_clips: int  # audio-caption pretraining
    images: int  # image-caption pretraining
    seconds: float = 4.0  # one miniature Whisper window
    long_seconds: float = 7.0  # clips that need a second audio window
    fps: int = 8
    size: int = 64
    no_audio_fraction: float = 0.15
    long_fraction: float = 0.1
    questions_per_clip: int = 4


PROFILES = {
    # 520 test clips: about 220 with beeps, so each kind of question, beep counts too, has at least 200 test items
    "tiny": Profile(train_clips=1500, val_clips=100, test_clips=520, speech_clips=800, sound_clips=800, images=800),
    "smoke": Profile(train_clips=32, val_clips=8, test_clips=16, speech_clips=24, sound_clips=24, images=24),
}


# ------------------------------------------------------------------ the world


@dataclass
class Facts:
    """Everything true of one clip; questions and answers are read off these."""

    name: str
    shape: str
    color: str
    background: str
    direction: str
    duration: float
    has_audio: bool
    word: str | None = None
    sentence: str | None = None
    voice: str | None = None
    sound: str | None = None
    beeps: int = 0
    pitch: str | None = None  # of the beeps: low | high
    speech_first: bool = True
    speech_span: tuple[float, float] | None = None
    sound_span: tuple[float, float] | None = None
    radius: float = 0.17  # of the shape, as a fraction of the frame side
    lateral: float = 0.5  # where across its path the shape travels, 0..1 of the frame

    def center(self, progress: float) -> tuple[float, float]:
        """(x, y) of the shape's centre, fractions of the frame, at `progress` 0..1 of the clip."""
        margin = self.radius + 1 / 64
        along = margin + progress * (1 - 2 * margin)
        return {
            "right": (along, self.lateral), "left": (1 - along, self.lateral),
            "down": (self.lateral, along), "up": (self.lateral, 1 - along),
        }[self.direction]

    def place(self, progress: float) -> str:
        """Where the shape is at `progress`, in words: 'at the top left', 'in the middle', ..."""
        x, y = self.center(progress)
        row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
        col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
        return f"at the {row} {col}".replace("  ", " ").rstrip() if row or col else "in the middle"

    def sound_phrase(self) -> str:
        if self.sound == "beeps":
            return f"{NUMBERS[self.beeps]} {self.pitch} beep{'s' if self.beeps > 1 else ''}"
        return {"siren": "a siren", "knocking": "knocking", "whistle": "a whistle", "hum": "a low hum",
                "noise": "a burst of noise", "chime": "a chime"}[self.sound]

    def scene(self, progress: float | None = None) -> str:
        """A caption of the picture; with `progress`, also where the shape is then."""
        where = "" if progress is None else f" {self.place(progress)}"
        return f"a {self.color} {self.shape}{where} on a {self.background} background"


def draw_shape(canvas: np.ndarray, shape: str, color, cx: float, cy: float, radius: float) -> None:
    """Paint a filled shape centred at (cx, cy) onto an (H, W, 3) canvas."""
    h, w, _ = canvas.shape
    y, x = np.mgrid[0:h, 0:w] + 0.5
    dx, dy = x - cx, y - cy
    if shape == "circle":
        mask = dx**2 + dy**2 <= radius**2
    elif shape == "square":
        mask = (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    elif shape == "diamond":
        mask = np.abs(dx) + np.abs(dy) <= radius * 1.1
    elif shape == "triangle":
        mask = (dy <= radius * 0.8) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) * 0.6)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    canvas[mask] = color


def render_frames(facts: Facts, profile: Profile) -> np.ndarray:
    """(T, S, S, 3) uint8: the shape crossing the frame in its direction."""
    count, size = round(facts.duration * profile.fps), profile.size
    frames = np.empty((count, size, size, 3), np.uint8)
    background = np.array(BACKGROUNDS[facts.background], np.uint8)
    for t in range(count):
        cx, cy = facts.center(progress(t, count))
        frame = frames[t]
        frame[:] = background
        draw_shape(frame, facts.shape, COLORS[facts.color], cx * size, cy * size, facts.radius * size)
    return frames


def progress(frame: int, count: int) -> float:
    """How far through its path the shape is at `frame` of `count` (frame t is shown from t / fps)."""
    return frame / max(count - 1, 1)


def synth_sound(kind: str, rng: np.random.Generator, beeps: int = 0, pitch: str = "high") -> np.ndarray:
    """A sound event at 16 kHz, float32."""
    def tone(freq, seconds, amp=0.3):
        t = np.arange(round(seconds * RATE)) / RATE
        ramp = np.minimum(1, np.minimum(t, t[::-1]) / 0.01)  # no clicks
        return amp * ramp * np.sin(2 * np.pi * freq * t)

    if kind == "beeps":
        freq = 1320.0 if pitch == "high" else 440.0
        gap = np.zeros(round(0.15 * RATE))
        parts = []
        for _ in range(beeps):
            parts += [tone(freq, 0.15), gap]
        return np.concatenate(parts[:-1]).astype(np.float32)
    t = np.arange(round(1.2 * RATE)) / RATE
    if kind == "siren":
        phase = 2 * np.pi * np.cumsum(900 + 300 * np.sin(2 * np.pi * 1.5 * t)) / RATE
        return (0.3 * np.sin(phase)).astype(np.float32)
    if kind == "knocking":
        out = np.zeros(round(1.0 * RATE))
        for k in range(3):
            start = round((0.05 + 0.3 * k) * RATE)
            burst = rng.standard_normal(round(0.06 * RATE)) * np.exp(-np.arange(round(0.06 * RATE)) / 150)
            burst = np.convolve(burst, np.ones(12) / 12, mode="same")  # dull: low-passed
            out[start : start + len(burst)] += 2.0 * burst
        return out.astype(np.float32)
    if kind == "whistle":
        t = t[: round(0.8 * RATE)]
        phase = 2 * np.pi * np.cumsum(2500 + 60 * np.sin(2 * np.pi * 6 * t)) / RATE
        return (0.25 * np.sin(phase) * np.minimum(1, np.minimum(t, t[::-1]) / 0.02)).astype(np.float32)
    if kind == "hum":
        return sum(tone(110 * h, 1.2, 0.3 / h) for h in (1, 2, 3)).astype(np.float32)
    if kind == "noise":
        return (0.2 * rng.standard_normal(round(0.4 * RATE))).astype(np.float32)
    if kind == "chime":
        decay = np.exp(-t / 0.35)
        return (sum(0.15 * np.sin(2 * np.pi * f * t) for f in (880, 2200, 3700)) * decay).astype(np.float32)
    raise ValueError(f"unknown sound {kind!r}")


def speech(sentence: str, voice: str, rng: np.random.Generator) -> np.ndarray:
    samples, rate = speak(sentence, voice=voice, rate=int(rng.integers(150, 200)))
    samples = resample(samples, rate, RATE)
    peak = np.abs(samples).max()
    return (0.5 * samples / peak if peak > 0 else samples).astype(np.float32)


def sample_facts(name: str, rng: np.random.Generator, profile: Profile, has_audio: bool, long: bool) -> Facts:
    facts = Facts(
        name=name,
        shape=str(rng.choice(SHAPES)),
        color=str(rng.choice(list(COLORS))),
        background=str(rng.choice(list(BACKGROUNDS))),
        direction=str(rng.choice(DIRECTIONS)),
        duration=profile.long_seconds if long else profile.seconds,
        has_audio=has_audio,
        radius=round(float(rng.uniform(0.14, 0.2)), 4),
        lateral=round(float(rng.uniform(0.3, 0.7)), 4),
    )
    if has_audio:
        facts.word = str(rng.choice(WORDS))
        facts.sentence = str(rng.choice(SENTENCES)).format(facts.word)
        facts.sentence = facts.sentence[0].upper() + facts.sentence[1:]
        facts.voice = str(rng.choice(VOICES))
        facts.sound = "beeps" if rng.random() < BEEPS_SHARE else str(rng.choice(SOUNDS[1:]))
        if facts.sound == "beeps":
            facts.beeps = int(rng.integers(1, 5))
            facts.pitch = str(rng.choice(("low", "high")))
        facts.speech_first = bool(rng.random() < 0.5) and not long
    return facts


def render_audio(facts: Facts, rng: np.random.Generator, profile: Profile) -> np.ndarray:
    """The clip's audio track: speech and the sound event, one after the other."""
    total = round(facts.duration * RATE)
    voice = speech(facts.sentence, facts.voice, rng)
    sound = synth_sound(facts.sound, rng, facts.beeps, facts.pitch or "high")
    gap = round(rng.uniform(0.15, 0.4) * RATE)
    if len(voice) + len(sound) + gap > total - round(0.1 * RATE):
        raise AssertionError(f"{facts.name}: speech and sound do not fit in {facts.duration} s")
    if facts.duration > profile.seconds:
        # Long clip: the sound comes first and the speech runs across the first window's end.
        sound_at = round(rng.uniform(0.2, 1.0) * RATE)
        window = round(profile.seconds * RATE)
        speech_at = int(np.clip(window - len(voice) // 2 + rng.integers(-RATE // 5, RATE // 5), sound_at + len(sound) + gap, total - len(voice)))
    else:
        slack = total - len(voice) - len(sound) - gap
        first_at = int(rng.integers(0, max(slack // 2, 1)))
        if facts.speech_first:
            speech_at, sound_at = first_at, first_at + len(voice) + gap
        else:
            sound_at, speech_at = first_at, first_at + len(sound) + gap
    track = np.zeros(total, np.float32)
    track[speech_at : speech_at + len(voice)] += voice
    track[sound_at : sound_at + len(sound)] += sound
    track += (0.003 * rng.standard_normal(total)).astype(np.float32)  # room noise: never digital silence
    facts.speech_span = (round(speech_at / RATE, 3), round((speech_at + len(voice)) / RATE, 3))
    facts.sound_span = (round(sound_at / RATE, 3), round((sound_at + len(sound)) / RATE, 3))
    return np.clip(track, -1, 1)


# -------------------------------------------------------------- questions


@dataclass
class QA:
    question: str
    answer: str
    needs: str  # audio | visual | audio-visual
    kind: str  # what the question asks about


def questions(f: Facts, rng: np.random.Generator) -> list[QA]:
    """Every question this clip can answer, with its answer and what it needs."""
    no_sound = "There is no sound."
    qa = [
        QA(str(rng.choice(("What shape moves in the video?", "Which shape do you see?"))), f"A {f.shape}.", "visual", "shape"),
        QA(str(rng.choice(("What colour is the shape?", "What is the colour of the moving shape?"))), f"{f.color.capitalize()}.", "visual", "color"),
        QA(str(rng.choice(("Which way does the shape move?", "In which direction does the shape move?"))), f"To the {f.direction}." if f.direction in ("left", "right") else f.direction.capitalize() + ".", "visual", "direction"),
        QA("What colour is the background?", f"{f.background.capitalize()}.", "visual", "background"),
        QA(str(rng.choice(("What word does the speaker say?", "Which word is spoken?"))), f"{f.word.capitalize()}." if f.has_audio else no_sound, "audio", "word"),
        QA(str(rng.choice(("What sound do you hear besides the voice?", "Which sound plays in the video?"))), f"{f.sound_phrase().capitalize()}." if f.has_audio else no_sound, "audio", "sound"),
    ]
    if f.has_audio and f.sound == "beeps":
        qa.append(QA("How many beeps do you hear?", f"{NUMBERS[f.beeps].capitalize()}.", "audio", "count"))
    if f.has_audio:
        first = "The voice." if f.speech_first else f"The {f.sound_phrase() if f.sound == 'beeps' else f.sound_phrase().removeprefix('a ')}."
        qa.append(QA("What do you hear first, the voice or the other sound?", first, "audio", "order"))
    qa.append(QA(
        "What word is spoken, and what shape moves?",
        f"{f.word.capitalize()}, and a {f.shape}." if f.has_audio else f"No word is spoken; a {f.shape} moves.",
        "audio-visual", "word+shape",
    ))
    qa.append(QA(
        "What colour is the shape, and what sound plays?",
        f"{f.color.capitalize()}, and {f.sound_phrase()}." if f.has_audio else f"{f.color.capitalize()}, and there is no sound.",
        "audio-visual", "color+sound",
    ))
    return qa


def describe(f: Facts) -> str:
    """A generic description, as the Video-ChatGPT generic questions expect."""
    motion = f"A {f.color} {f.shape} moves {'to the ' if f.direction in ('left', 'right') else ''}{f.direction} on a {f.background} background."
    if not f.has_audio:
        return motion + " There is no sound."
    said = f"a voice says \"{f.word}\""
    heard = f.sound_phrase()
    events = f"{said.capitalize()}, then {heard}." if f.speech_first else f"{heard.capitalize()}, then {said}."
    return f"{motion} {events}"


def temporal(f: Facts) -> tuple[str, str]:
    if f.has_audio:
        q = "What happens first in the video, the speech or the other sound?"
        first, then = (f"the voice says \"{f.word}\"", f.sound_phrase()) if f.speech_first else (f.sound_phrase(), f"the voice says \"{f.word}\"")
        return q, f"First {first}, then {then}."
    return "Where is the shape at the end of the video?", f"The {f.shape} ends {END_SIDE[f.direction]}."


# ------------------------------------------------------------------ building


def item_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Each item's own generator: the corpus does not depend on the order items are made in."""
    return np.random.default_rng([seed, sum(ord(c) << (8 * i) for i, c in enumerate(split[:6])), index])


def clip_facts(seed: int, split: str, index: int, profile: Profile) -> tuple[Facts, np.random.Generator]:
    """What clip `index` of `split` shows and plays, and its generator as drawing them left it (its soundtrack and
    questions draw on from there)."""
    rng = item_rng(seed, split, index)
    has_audio = rng.random() >= profile.no_audio_fraction
    long = has_audio and rng.random() < profile.long_fraction
    return sample_facts(f"{split}_{index:05d}", rng, profile, has_audio, long), rng


def make_clip(task: tuple) -> dict:
    """Render, write and describe one clip (runs in a worker process)."""
    seed, split, index, profile, out = task
    facts, rng = clip_facts(seed, split, index, profile)
    frames = render_frames(facts, profile)
    audio = render_audio(facts, rng, profile) if facts.has_audio else None
    write_media(Path(out) / "clips" / f"{facts.name}.mp4", frames, profile.fps, audio, RATE, keyframe_seconds=1.0)
    qa = questions(facts, rng)
    return {"facts": asdict(facts), "qa": [asdict(q) for q in qa], "description": describe(facts), "temporal": temporal(facts)}


def make_speech(task: tuple) -> dict:
    seed, split, index, profile, out = task
    rng = item_rng(seed, split, index)
    word = str(rng.choice(WORDS))
    sentence = str(rng.choice(SENTENCES)).format(word)
    sentence = sentence[0].upper() + sentence[1:]
    voice = speech(sentence, str(rng.choice(VOICES)), rng)
    lead = np.zeros(round(rng.uniform(0.1, 0.8) * RATE), np.float32)
    track = np.concatenate([lead, voice])[: round(profile.seconds * RATE)]
    track = track + (0.003 * rng.standard_normal(len(track))).astype(np.float32)
    name = f"speech_{index:05d}"
    write_media(Path(out) / "audio" / f"{name}.flac", audio=np.clip(track, -1, 1), sample_rate=RATE)
    text = sentence.lower().rstrip(".").replace(":", "")
    return {"id": name, "media": f"audio/{name}.flac", "text": text, "word": word}


def make_sound(task: tuple) -> dict:
    seed, split, index, profile, out = task
    rng = item_rng(seed, split, index)
    facts = sample_facts(f"sound_{index:05d}", rng, profile, True, False)
    track = render_audio(facts, rng, profile)
    write_media(Path(out) / "audio" / f"{facts.name}.flac", audio=track, sample_rate=RATE)
    said = f"a voice says {facts.word}"
    caption = f"{said}, then {facts.sound_phrase()}" if facts.speech_first else f"{facts.sound_phrase()}, then {said}"
    return {"id": facts.name, "media": f"audio/{facts.name}.flac", "caption": caption,
            "sound": facts.sound, "beeps": facts.beeps, "word": facts.word}


def make_image(task: tuple) -> dict:
    seed, split, index, profile, out = task
    rng = item_rng(seed, split, index)
    facts = sample_facts(f"image_{index:05d}", rng, profile, False, False)
    frames = render_frames(facts, profile)
    index = int(rng.integers(0, len(frames)))
    path = Path(out) / "images" / f"{facts.name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frames[index]).save(path, optimize=False)
    caption = facts.scene(progress(index, len(frames)))
    return {"id": facts.name, "media": f"images/{facts.name}.png", "caption": caption,
            "shape": facts.shape, "color": facts.color, "background": facts.background}


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def build(profile: str | Profile, out: str | Path, seed: int = 0, workers: int | None = None, progress: bool = True,
          name: str = "custom") -> dict:
    """Generate the corpus of `profile` (a name in PROFILES, or sizes called `name`) into `out`; returns the manifest.

    What a previous build left in `out` is replaced.
    """
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"unknown corpus profile {profile!r}; valid: {', '.join(PROFILES)} (the paper profile uses real data)")
        profile_name, profile = profile, PROFILES[profile]
    else:
        profile_name = name
    out = Path(out)
    if out.exists():
        for sub in ("clips", "audio", "images", "splits", "benchmarks"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or min(os.cpu_count() or 1, 8)
    start = time.monotonic()

    def run(fn, split, count):
        tasks = [(seed, split, i, profile, str(out)) for i in range(count)]
        if workers == 1:
            results = [fn(t) for t in tasks]
        else:
            with ProcessPoolExecutor(workers) as pool:
                results = list(pool.map(fn, tasks, chunksize=8))
        if progress:
            print(f"  {split:6s} {count:5d} items  ({time.monotonic() - start:5.1f} s)", flush=True)
        return results

    clips = {split: run(make_clip, split, n) for split, n in
             (("train", profile.train_clips), ("val", profile.val_clips), ("test", profile.test_clips))}
    speech_items = run(make_speech, "speech", profile.speech_clips)
    sound_items = run(make_sound, "sound", profile.sound_clips)
    image_items = run(make_image, "image", profile.images)

    splits = out / "splits"
    _write_json(splits / "speech_to_text.json", speech_items)
    _write_json(splits / "audio_captions.json", sound_items)
    _write_json(splits / "image_captions.json", image_items)
    for split in ("train", "val"):
        records = []
        for clip in clips[split]:
            rng = item_rng(seed, split + "qa", int(clip["facts"]["name"].split("_")[1]))
            chosen = rng.choice(len(clip["qa"]), size=min(profile.questions_per_clip, len(clip["qa"])), replace=False)
            for k in sorted(chosen):
                q = clip["qa"][k]
                records.append({"video": f"clips/{clip['facts']['name']}.mp4", "question": q["question"],
                                "answer": q["answer"], "needs": q["needs"], "kind": q["kind"]})
            records.append({"video": f"clips/{clip['facts']['name']}.mp4", "question": "Describe the video.",
                            "answer": clip["description"], "needs": "audio-visual" if clip["facts"]["has_audio"] else "visual",
                            "kind": "description"})
        _write_json(splits / f"video_instructions_{split}.json", records)

    test = clips["test"]
    bench = out / "benchmarks" / "video_chatgpt"
    _write_json(bench / "generic_qa.json", [
        {"Q": "Describe what happens in the video in detail.", "A": c["description"], "video_name": c["facts"]["name"]} for c in test
    ])
    _write_json(bench / "temporal_qa.json", [
        {"Q": c["temporal"][0], "A": c["temporal"][1], "video_name": c["facts"]["name"]} for c in test
    ])
    consistency = []
    for c in test:
        f = c["facts"]
        if f["has_audio"]:
            consistency.append({"Q1": "What word does the speaker say?", "Q2": "Which word can be heard in the video?",
                                "A": f"The speaker says \"{f['word']}\".", "video_name": f["name"]})
        else:
            consistency.append({"Q1": "What shape moves in the video?", "Q2": "Which shape can be seen moving?",
                                "A": f"A {f['color']} {f['shape']}.", "video_name": f["name"]})
    _write_json(bench / "consistency_qa.json", consistency)
    _write_json(out / "benchmarks" / "audio_aware" / "qa.json", [
        {"video_name": c["facts"]["name"], "Q": q["question"], "A": q["answer"], "needs": q["needs"], "kind": q["kind"]}
        for c in test for q in c["qa"]
    ])
    _write_json(out / "clips.json", [c["facts"] for split in clips.values() for c in split])
    manifest = {
        "profile": profile_name, "seed": seed, "version": VERSION, "profile_settings": asdict(profile),
        "counts": {**{f"{k}_clips": len(v) for k, v in clips.items()}, "speech": len(speech_items),
                   "sounds": len(sound_items), "images": len(image_items)},
        "clips_without_audio": sum(not c["facts"]["has_audio"] for v in clips.values() for c in v),
        "long_clips": sum(c["facts"]["duration"] > profile.seconds for v in clips.values() for c in v),
    }
    _write_json(out / "manifest.json", manifest)
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic audio-visual corpus.")
    parser.add_argument("--profile", default="tiny", choices=sorted(PROFILES))
    parser.add_argument("--out", default="data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    parser.add_argument("--params", help="take the profile and seed from this file's `corpus` section instead")
    parser.add_argument("--if-needed", action="store_true", help="do nothing when --out already holds that corpus")
    args = parser.parse_args(argv)
    if args.params:
        from avlib.config import load_params

        corpus = load_params(args.params).corpus
        if corpus.profile not in PROFILES:
            print(f"corpus profile {corpus.profile!r} is not synthetic: prepare real data with avlib.prepare (README)")
            return
        args.profile, args.seed = corpus.profile, corpus.seed
    manifest_file = Path(args.out) / "manifest.json"
    if args.if_needed and manifest_file.is_file():
        manifest = json.loads(manifest_file.read_text())
        if (manifest.get("profile"), manifest.get("seed"), manifest.get("version")) == (args.profile, args.seed, VERSION):
            print(f"{args.out}/ already holds the {args.profile} corpus (seed {args.seed})")
            return
    start = time.monotonic()
    print(f"building the {args.profile} corpus (seed {args.seed}) into {args.out}/")
    manifest = build(args.profile, args.out, args.seed, args.workers)
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"done in {time.monotonic() - start:.1f} s: {json.dumps(manifest['counts'])}, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
