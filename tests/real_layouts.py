"""Small download folders in the official layouts of every source `avlib.prepare` reads.

`build_downloads(root)` writes, under root, what a researcher has after
downloading each dataset, with the encodings real files have: H.264/AAC MP4,
Matroska and WebM (VP9/Opus) videos, some without an audio track, stereo audio
at 44.1 and 48 kHz, keyframes seconds apart, and clips longer than the
miniature Whisper's 4 s window. Returns the folder of each source, keyed as the
README's `--src` arguments name them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from media_fixtures import Spec, encode

# The kinds of video real downloads hold (ActivityNet's YouTube videos come as .mp4, .mkv and .webm).
VIDEO_KINDS = [
    Spec(".mp4", seconds=6, keyframe_seconds=2, sample_rate=44100, channels=2),
    Spec(".mkv", audio_codec="libopus", seconds=9, keyframe_seconds=4, sample_rate=48000, channels=2),
    Spec(".webm", "libvpx-vp9", "libopus", seconds=5, keyframe_seconds=5, sample_rate=48000),
    Spec(".mp4", audio_codec=None, seconds=7, keyframe_seconds=None),  # no audio track, the encoder's keyframes
]
AUDIO_KINDS = [Spec(".flac", None, "flac", seconds=3, sample_rate=16000), Spec(".wav", None, "pcm_s16le", seconds=5, sample_rate=44100, channels=2)]


def _video(folder: Path, name: str, i: int) -> Path:
    spec = VIDEO_KINDS[i % len(VIDEO_KINDS)]
    return encode(folder / f"{name}{spec.suffix}", spec)


def _audio(path: Path, i: int) -> Path:
    return encode(path, AUDIO_KINDS[i % len(AUDIO_KINDS)])


def build_downloads(root: Path) -> dict[str, Path]:
    root = Path(root)
    src = {}

    # LibriSpeech: SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt beside the utterances' FLAC files.
    chapter = root / "LibriSpeech" / "train-clean-100" / "19" / "198"
    lines = []
    for i in range(6):
        _audio(chapter / f"19-198-{i:04d}.flac", 0)
        lines.append(f"19-198-{i:04d} NORTHANGER ABBEY CHAPTER {i} IT WAS A FINE DAY")
    (chapter / "19-198.trans.txt").write_text("\n".join(lines) + "\n")
    src["librispeech"] = root / "LibriSpeech"

    # Clotho v2.1: clotho_captions_<split>.csv (file_name, caption_1..5) beside the <split>/ audio folder.
    clotho = root / "clotho"
    clotho.mkdir(parents=True)
    with (clotho / "clotho_captions_development.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", *(f"caption_{k}" for k in range(1, 6))])
        for i in range(3):
            name = f"Rain on roof {i}.wav"
            _audio(clotho / "development" / name, 1)
            writer.writerow([name, *(f"rain drums on a metal roof, take {k}" for k in range(1, 6))])
    src["clotho"] = clotho

    # AudioCaps: train.csv (audiocap_id, youtube_id, start_time, caption); the clips fetched as audio/<id>_<start>.wav.
    caps = root / "audiocaps"
    caps.mkdir(parents=True)
    rows = [("91139", "r1nicOVtvkQ", "130", "A woman talks as a baby cries"), ("58146", "UDGBjjwyaqE", "20", "A dog barks twice")]
    with (caps / "train.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        for i, row in enumerate(rows):
            writer.writerow(row)
            _audio(caps / "audio" / f"{row[1]}_{row[2]}.wav", i)
    src["audiocaps"] = caps

    # VideoInstruct-100K: one JSON [{video_id, q, a}] and the ActivityNet videos it names.
    instruct = root / "videoinstruct"
    records = []
    for i in range(8):
        video_id = f"v_instr{i:03d}"
        _video(instruct / "videos", video_id, i)
        records += [{"video_id": video_id, "q": "What is happening in the video?", "a": f"A person plays a game, scene {i}."},
                    {"video_id": video_id, "q": "Where does it take place?", "a": "It takes place outdoors on a field."}]
    (instruct / "VideoInstruct100K.json").write_text(json.dumps(records))
    src["videoinstruct"] = instruct

    # Video-ChatGPT benchmark: the three QA files and the official download's Test_Videos/.
    bench = root / "video_chatgpt"
    names = [f"v_bench{i:02d}" for i in range(3)]
    for i, name in enumerate(names):
        _video(bench / "Test_Videos", name, i + 1)
    (bench / "generic_qa.json").write_text(json.dumps(
        [{"Q": "What is the man doing?", "A": "The man is playing a guitar on a stage.", "video_name": n} for n in names]))
    (bench / "temporal_qa.json").write_text(json.dumps(
        [{"Q": "What happens after he sits down?", "A": "He starts to play.", "video_name": n} for n in names]))
    (bench / "consistency_qa.json").write_text(json.dumps(
        [{"Q1": "What instrument is played?", "Q2": "Which instrument does the man play?", "A": "A guitar.", "video_name": n}
         for n in names]))
    src["video_chatgpt"] = bench

    # ActivityNet-QA: test_q.json and test_a.json joined by question_id; videos v_<video_name>.
    anet = root / "activitynet_qa"
    questions, answers = [], []
    for i in range(3):
        _video(anet / "videos", f"v_anet{i:02d}", i + 2)
        questions += [{"question": "is the person outdoors", "question_id": f"v_anet{i:02d}_0", "video_name": f"anet{i:02d}"},
                      {"question": "what is the person holding", "question_id": f"v_anet{i:02d}_1", "video_name": f"anet{i:02d}"}]
        answers += [{"answer": "yes", "question_id": f"v_anet{i:02d}_0", "type": 3},
                    {"answer": "racket", "question_id": f"v_anet{i:02d}_1", "type": 2}]
    (anet / "test_q.json").write_text(json.dumps(questions))
    (anet / "test_a.json").write_text(json.dumps(answers))
    src["activitynet_qa"] = anet

    # MUSIC-AVQA: json_update/avqa-{train,val,test}.json; videos <video_id>.mp4 in MUSIC-AVQA-videos-Real/.
    avqa = root / "music_avqa"
    (avqa / "json_update").mkdir(parents=True)
    test = []
    kinds = [("Audio", "Counting", "How many instruments are sounding in the video?", "[]", "two"),
             ("Visual", "Location", "Where is the performance?", "[]", "indoor"),
             ("Audio-Visual", "Temporal", "Where is the first sounding instrument?", "[]", "left"),
             ("Audio-Visual", "Existential", "Is the <Object> in the video always playing?", '["cello"]', "yes"),
             ("Audio", "Comparative", "Is the <Object> louder than the <Object>?", '["piano", "violin"]', "no"),
             ("Visual", "Counting", "How many <Object> are in the entire video?", '["acoustic_guitar"]', "one")]
    for i in range(4):
        video_id = f"{93 + i:08d}"
        spec = VIDEO_KINDS[0] if i % 2 == 0 else VIDEO_KINDS[1]
        encode(avqa / "MUSIC-AVQA-videos-Real" / f"{video_id}.mp4", Spec(".mp4", seconds=spec.seconds, keyframe_seconds=3,
                                                                         sample_rate=spec.sample_rate, channels=2))
        for k, (modality, kind, question, values, answer) in enumerate(kinds):
            test.append({"video_id": video_id, "question_id": 100 * i + k, "type": json.dumps([modality, kind]),
                         "question_content": question, "templ_values": values, "question_deleted": 0, "anser": answer})
    test.append({**test[0], "question_id": 999, "question_deleted": 1})  # deleted by the authors: left out
    for split, records in (("train", test[:6]), ("val", test[:6]), ("test", test)):
        (avqa / "json_update" / f"avqa-{split}.json").write_text(json.dumps(records))
    src["music_avqa"] = avqa
    return src
