"""Real data for the paper profile: lay out downloaded sources as the corpus the study reads.

    python -m avlib.prepare SOURCE --src DOWNLOADED_FOLDER --out data/paper [--limit N] [--seed S] [--on-missing stop|skip]
    python -m avlib.prepare cost --data data/paper [--params params.yaml] [--tokens-per-second N]

Each source writes the records the synthetic corpus uses (data/paper/splits/*.json and
benchmarks/), and links its media under data/paper/media/ so the feature cache can name them
relative to the data folder. Where to get each (licences as their authors state them):

| source | where | licence | expected layout under --src |
|---|---|---|---|
| librispeech | openslr.org/12 (train-clean-100, -360) | CC BY 4.0 | SPEAKER/CHAPTER/*.trans.txt + *.flac |
| clotho | zenodo, Clotho v2.1 | audio: Freesound licences; captions: Tampere University licence | clotho_captions_*.csv + the audio folder beside it |
| audiocaps | github.com/cdjkim/audiocaps (CSV); audio from YouTube, fetched by the user | CSV: MIT | train.csv (+ val/test) + audio/{youtube_id}_{start_time}.wav |
| videoinstruct | VideoInstruct-100K (huggingface.co/datasets/MBZUAI/VideoInstruct-100K) + ActivityNet videos | CC BY-SA 4.0 (JSON, as its dataset card states); videos: ActivityNet terms | VideoInstruct100K.json + videos/ |
| video-chatgpt | Video-ChatGPT's quantitative evaluation QA files + its test videos | CC BY 4.0 | generic_qa.json, temporal_qa.json, consistency_qa.json + videos/ or Test_Videos/ |
| activitynet-qa | github.com/MILVLG/activitynet-qa | Apache 2.0 (QA); videos: ActivityNet terms | test_q.json, test_a.json + videos/ |
| music-avqa | gewu-lab.github.io/MUSIC-AVQA (annotations on GitHub, videos from the project page) | MIT (annotations); videos: YouTube, their owners' terms | json_update/avqa-{train,val,test}.json + videos/, MUSIC-AVQA-videos-Real/ or MUSIC-AVQA-videos-Synthetic/ |

Missing media are listed in a report (missing_<source>.txt), and every file kept is probed by
decoding its first frame: those that cannot be decoded are listed with the reason in
unreadable_<source>.txt. `--on-missing stop` (the default) then exits non-zero, `--on-missing
skip` leaves those items out and goes on. `--limit` draws a
seeded subsample (paper: 50K speech-to-text + 50K audio captions).

`videoinstruct` holds out a seeded validation split (video_instructions_val: 1 % of the videos,
at most 100, whole videos so no clip is in both). `music-avqa` lays out the test split as the
real path's audio-aware benchmark (data/benchmarks/music_avqa/qa.json; --limit draws a seeded
subset stratified by modality). The paper's own audio-visual benchmark is not public.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import av
import numpy as np

from avlib.datasets import (
    DataError,
    Example,
    read_activitynet_qa,
    read_audiocaps,
    read_clotho,
    read_librispeech,
    read_music_avqa,
    read_video_chatgpt,
    read_videoinstruct,
    subsample,
)

SOURCES = ("librispeech", "clotho", "audiocaps", "videoinstruct", "video-chatgpt", "activitynet-qa", "music-avqa")
MUSIC_AVQA_VIDEO_FOLDERS = ("videos", "MUSIC-AVQA-videos-Real", "MUSIC-AVQA-videos-Synthetic")
VAL_FRACTION, VAL_MAX_VIDEOS = 0.01, 100  # VideoInstruct-100K videos held out for the finetuning notebook's look


class MissingMedia(RuntimeError):
    """Media files named by a source's records are not on disk."""


def _one(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(folder.rglob(pattern))
    if not found:
        raise DataError(f"{folder}: no {pattern} ({what}); see `python -m avlib.prepare --help` for the expected layout")
    return found[0]


def read_source(source: str, src: Path) -> tuple[str, list[Example]]:
    """(split name, examples) of a downloaded source."""
    if source == "librispeech":
        return "speech_to_text", read_librispeech(src)
    if source == "clotho":
        examples = []
        for csv in sorted(src.rglob("clotho_captions_*.csv")):
            audio = csv.parent / csv.stem.replace("clotho_captions_", "")
            examples += read_clotho(csv, audio if audio.is_dir() else csv.parent)
        if not examples:
            raise DataError(f"{src}: no clotho_captions_*.csv")
        return "audio_captions", examples
    if source == "audiocaps":
        examples = []
        for csv in sorted(p for p in src.rglob("*.csv") if p.stem in ("train", "val", "test")):
            examples += read_audiocaps(csv, src / "audio")
        if not examples:
            raise DataError(f"{src}: no train.csv, val.csv or test.csv (the AudioCaps CSVs)")
        return "audio_captions", examples
    if source == "videoinstruct":
        return "video_instructions_train", read_videoinstruct(_one(src, "*.json", "the VideoInstruct-100K JSON"), src / "videos")
    if source == "video-chatgpt":
        # The official download unpacks its videos into Test_Videos/.
        videos = next((src / name for name in ("videos", "Test_Videos") if (src / name).is_dir()), src / "videos")
        return "video_chatgpt", [e for name in ("generic_qa", "temporal_qa", "consistency_qa")
                                 for e in read_video_chatgpt(_one(src, f"{name}.json", "a benchmark file"), videos)]
    if source == "music-avqa":
        annotations = src / "json_update" / "avqa-test.json"
        if not annotations.is_file():
            raise DataError(f"{src}: no json_update/avqa-test.json (the MUSIC-AVQA annotations); see `python -m avlib.prepare --help`")
        return "music_avqa", read_music_avqa(annotations, [src / name for name in MUSIC_AVQA_VIDEO_FOLDERS])
    if source == "activitynet-qa":
        return "activitynet_qa", read_activitynet_qa(_one(src, "test_q.json", "questions"), _one(src, "test_a.json", "answers"), src / "videos")
    raise DataError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")


def hold_out_videos(examples: list[Example], seed: int) -> tuple[list[Example], list[Example]]:
    """(train, val): a seeded VAL_FRACTION of the videos (at least 1 where there are 2, at most VAL_MAX_VIDEOS), whole."""
    videos = sorted({str(e.media) for e in examples})
    count = min(VAL_MAX_VIDEOS, max(1 if len(videos) > 1 else 0, round(VAL_FRACTION * len(videos))))
    held = set(np.random.default_rng(seed).choice(videos, size=count, replace=False).tolist()) if count else set()
    return [e for e in examples if str(e.media) not in held], [e for e in examples if str(e.media) in held]


class UnreadableMedia(RuntimeError):
    """Media files a source names are on disk but cannot be decoded."""


def probe(path: Path) -> tuple[str | None, bool]:
    """(why the file cannot be read, or None; whether it has an audio track), by decoding its first frame."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if container.format.name == "tty":  # FFmpeg's text-art demuxer: any text file "decodes"
                return "is text, not audio or video", False
            video, audio = container.streams.video, container.streams.audio
            if not video and not audio:
                return "no audio or video stream", False
            stream = video[0] if video else audio[0]
            if next(container.decode(stream), None) is None:
                return "no frame decodes", bool(audio)
            return None, bool(audio)
    except Exception as err:  # FFmpeg's errors of every kind: the file is unreadable, and this says why
        return f"cannot decode: {err}", False


def _link(media: Path, src: Path, out: Path, benchmark: bool = False) -> str:
    """Link `media` under out/media/ (its path below src kept), or benchmark videos under out/clips/
    (where the evaluation looks them up by name); returns the path relative to out."""
    relative = Path("clips") / media.name if benchmark else Path("media") / media.resolve().relative_to(src.resolve())
    target = out / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.symlink(media.resolve(), target)
    return relative.as_posix()


def _report(path: Path, problems: list[str], summary: str, error: type[Exception], on_missing: str, log) -> bool:
    """Write the list of problem files to `path` (or remove a stale one); raise `error` under --on-missing stop.
    Returns whether there were problems to leave out."""
    if not problems:
        if path.exists():
            path.unlink()
        return False
    path.write_text("\n".join(problems) + "\n")
    log(f"{summary}; list in {path}")
    if on_missing == "stop":
        raise error(f"{summary} (first: {problems[0]}); see {path}, or pass --on-missing skip to go on without them")
    return True


def prepare(source: str, src: str | Path, out: str | Path, limit: int | None = None, seed: int = 0,
            on_missing: str = "stop", log=print) -> dict:
    """Lay out one source under `out`; returns a summary. Raises MissingMedia (on_missing='stop') listing what is absent."""
    if on_missing not in ("stop", "skip"):
        raise ValueError(f"on_missing must be 'stop' or 'skip', got {on_missing!r}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(f"{src}: no such folder; download {source} first (see `python -m avlib.prepare --help`)")
    split, examples = read_source(source, src)
    out.mkdir(parents=True, exist_ok=True)
    missing = sorted({str(e.media) for e in examples if not e.media.is_file()})
    if _report(out / f"missing_{source}.txt", missing, f"{source}: {len(missing)} of {len({str(e.media) for e in examples})} "
               "media files are missing", MissingMedia, on_missing, log):
        examples = [e for e in examples if e.media.is_file()]
    examples = subsample(examples, limit, seed, stratify=split == "music_avqa")
    probed = {str(m): probe(m) for m in sorted({e.media for e in examples})}
    unreadable = sorted(f"{m}\t{why}" for m, (why, _) in probed.items() if why)
    if _report(out / f"unreadable_{source}.txt", unreadable, f"{source}: {len(unreadable)} media files cannot be decoded",
               UnreadableMedia, on_missing, log):
        examples = [e for e in examples if not probed[str(e.media)][0]]

    def has_audio_track(path: Path) -> bool:
        return probed[str(path)][1]
    if split == "music_avqa":
        bench = out / "benchmarks" / split
        bench.mkdir(parents=True, exist_ok=True)
        for example in examples:
            _link(example.media, src, out, benchmark=True)
        (bench / "qa.json").write_text(json.dumps(
            [{"video_name": e.media.stem, "Q": e.question, "A": e.answer, "needs": e.needs, "kind": e.kind, "question_id": e.id}
             for e in examples], indent=1))
        (bench / "videos.json").write_text(json.dumps({e.media.stem: has_audio_track(e.media) for e in examples}, indent=1))
        answers = sorted({e.answer for e in examples})
        log(f"{source}: {len(answers)} distinct answers; by modality: "
            + ", ".join(f"{n} {sum(e.needs == n for e in examples)}" for n in ("audio", "visual", "audio-visual")))
    elif split in ("video_chatgpt", "activitynet_qa"):
        bench = out / "benchmarks" / split
        bench.mkdir(parents=True, exist_ok=True)
        for example in examples:
            _link(example.media, src, out, benchmark=True)
        if split == "video_chatgpt":
            for name in ("generic_qa", "temporal_qa", "consistency_qa"):
                records = json.loads(_one(src, f"{name}.json", "a benchmark file").read_text())
                kept = {e.id.split("/")[0] for e in examples}
                (bench / f"{name}.json").write_text(json.dumps([r for r in records if r["video_name"] in kept], indent=1))
        else:
            (bench / "qa.json").write_text(json.dumps([{"video_name": e.media.stem, "Q": e.question, "A": e.answer, "kind": e.kind,
                                                        "question_id": e.id} for e in examples], indent=1))
        videos = {e.media.stem: has_audio_track(e.media) for e in examples}
        (bench / "videos.json").write_text(json.dumps(videos, indent=1))
    else:
        audio_of: dict[str, bool] = {}
        parts = dict(zip((split, "video_instructions_val"), hold_out_videos(examples, seed))) if split == "video_instructions_train" \
            else {split: examples}
        for name, part in parts.items():
            records = []
            for e in part:
                media = _link(e.media, src, out)
                if name == "speech_to_text":
                    records.append({"id": e.id, "media": media, "text": e.answer})
                elif name == "audio_captions":
                    records.append({"id": e.id, "media": media, "caption": e.answer})
                else:
                    if media not in audio_of:
                        audio_of[media] = has_audio_track(e.media)
                    records.append({"video": media, "question": e.question, "answer": e.answer, "needs": None, "kind": e.kind,
                                    "has_audio": audio_of[media]})
            path = out / "splits" / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            if name == "audio_captions" and path.is_file():  # Clotho and AudioCaps both feed this split
                previous = [r for r in json.loads(path.read_text()) if not r["id"].startswith(source)]
                records = previous + records
            path.write_text(json.dumps(records, indent=1))
        if audio_of:
            log(f"{source}: {sum(audio_of.values())} of {len(audio_of)} videos have an audio track; "
                f"{len(parts.get('video_instructions_val', []))} instructions held out for validation")
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"profile": "paper", "seed": seed, "sources": {}}
    manifest["sources"][source] = {"items": len(examples), "missing": len(missing), "limit": limit, "seed": seed, "from": str(src.resolve())}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    log(f"{source}: {len(examples)} items -> {out}")
    return manifest["sources"][source]


# ----------------------------------------------------------------------- cost

JUDGE_PROMPT_TOKENS, JUDGE_REPLY_TOKENS = 260, 40  # our judge prompt with a short answer; a JSON score and a reason


def estimate_cost(params, data_root: str | Path, tokens_per_second: float, gpu: str) -> dict:
    """Tokens per stage, GPU-hours per stage at a measured throughput, and the chat judge's token cost.

    Text tokens are estimated as characters / 4 (English with phi-2's BPE); media tokens are exact.
    """
    root = Path(data_root)
    video_tokens = params.model.vision.num_frames + (384 // 14) ** 2  # T + P for SigLIP so400m at 384
    audio_tokens = params.model.audio.num_audio_tokens  # per window; one window per clip assumed
    prompt_tokens = 40  # the system sentence and the roles

    def split(name):
        path = root / "splits" / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def text(record):
        return (len(record.get("question", "")) + len(record.get("answer", record.get("text", record.get("caption", ""))))) / 4

    stages = {
        "pretrain_audio": sum(prompt_tokens + audio_tokens + text(r) for r in split("speech_to_text") + split("audio_captions")),
        "finetune_av": sum(prompt_tokens + video_tokens + audio_tokens + text(r) for r in split("video_instructions_train")),
        "finetune_vision_only": sum(prompt_tokens + video_tokens + text(r) for r in split("video_instructions_train")),
    }
    bench = root / "benchmarks" / "video_chatgpt"
    items = sum(len(json.loads((bench / f"{n}.json").read_text())) for n in ("generic_qa", "temporal_qa", "consistency_qa")
                if (bench / f"{n}.json").is_file())
    calls = items * 5 * 2  # at most five criteria (each item is scored on its file's criteria) for both models
    chat = params.evaluate.chat
    judge_cost = calls * (JUDGE_PROMPT_TOKENS * chat.price_per_1k_prompt + JUDGE_REPLY_TOKENS * chat.price_per_1k_completion) / 1000
    return {
        "gpu": gpu, "tokens_per_second": tokens_per_second,
        "stages": {name: {"tokens": round(tokens), "gpu_hours": round(tokens) / tokens_per_second / 3600} for name, tokens in stages.items()},
        "judge": {"model": chat.model, "benchmark_items": items, "calls_at_most": calls, "cost_at_most": round(judge_cost, 2)},
    }


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avlib.prepare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", choices=[*SOURCES, "cost"])
    parser.add_argument("--src", help="the downloaded folder")
    parser.add_argument("--out", default="data/paper")
    parser.add_argument("--data", default="data/paper", help="(cost) the prepared data")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--limit", type=_at_least_one, help="a seeded draw of this many items (1 or more)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--on-missing", choices=("stop", "skip"), default="stop")
    # Measured: benchmarks/results/gpu_lora_step_h100.txt (batch 8, no gradient checkpointing).
    parser.add_argument("--tokens-per-second", type=float, default=13675, help="(cost) training throughput of the GPU")
    parser.add_argument("--gpu", default="NVIDIA H100 80GB (measured)")
    args = parser.parse_args(argv)
    try:
        if args.source == "cost":
            from avlib.config import load_params

            print(json.dumps(estimate_cost(load_params(args.params), args.data, args.tokens_per_second, args.gpu), indent=1))
            return 0
        if not args.src:
            parser.error("--src is required")
        prepare(args.source, args.src, args.out, args.limit, args.seed, args.on_missing)
    except (DataError, MissingMedia, UnreadableMedia) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
