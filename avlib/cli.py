"""The command line: ask a trained model about a video, or answer a benchmark file.

    avlib ask VIDEO "What word does the speaker say?" [--json] [--no-audio] [--model av|vision_only]
    avlib predict BENCHMARK.json --videos FOLDER --out PREDICTIONS.json [--model av|vision_only]

Both read params.yaml and the pipeline's outputs (checkpoints/foundation, runs/).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _load(args):
    import warnings

    from transformers.utils import logging as transformers_logging

    # What a user of the command line should not wade through: transformers' bar for loading each model's
    # weights (a fraction of a second here), and one deprecation warning that peft triggers inside
    # transformers, not ours to fix (tools/run_notebook.sh and pyproject.toml hide the same one).
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

    from avlib.config import load_params
    from avlib.runtime import configure
    from avlib.foundation import MissingData
    from avlib.stages import finetuned_parts, load_trained_model

    params = load_params(args.params)
    configure(params.runtime)
    try:
        runs = finetuned_parts(params, args.runs, args.model)
    except MissingData as err:
        raise SystemExit(f"error: {err}") from None
    model = load_trained_model(params, args.foundation, runs, use_audio=args.model == "av")
    return params, model


def ask(args) -> int:
    from avlib.datasets import collate_media
    from avlib.media import MediaError, load_clip

    params, model = _load(args)
    size = model.vision_encoder.image_size[0]  # the SigLIP input size, tiny or paper
    try:
        clip = load_clip(args.video, num_frames=params.model.vision.num_frames, frame_size=size)
    except MediaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    item = {"id": str(args.video), "frames": clip.frames, "audio": None if args.no_audio else clip.audio,
            "question": args.question, "answer": None, "needs": None}  # one item as MediaDataset gives them
    try:
        batch = collate_media([item], model, with_answers=False)  # the twin is given no sound there
    except ValueError as err:  # a placeholder token in the question, or a prompt the model cannot hold
        print(f"error: {err}", file=sys.stderr)
        return 2
    (answer,) = model.generate(batch, max_new_tokens=params.evaluate.max_new_tokens, temperature=args.temperature)
    if args.json:
        print(json.dumps({"video": str(args.video), "question": args.question, "answer": answer, "model": args.model,
                          "audio_used": batch["audio_features"][0] is not None, "duration": clip.duration}))
    else:
        print(answer)
    return 0


def predict(args) -> int:
    from avlib.datasets import DataError, MediaDataset, collate_media, read_video_chatgpt
    from avlib.media import MediaError

    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"error: {out.parent} does not exist; create it, or give --out a path in an existing folder", file=sys.stderr)
        return 2
    params, model = _load(args)
    size = model.vision_encoder.image_size[0]  # the SigLIP input size, tiny or paper
    try:
        examples = read_video_chatgpt(args.benchmark, args.videos)
        records = json.loads(Path(args.benchmark).read_text())
        dataset = MediaDataset(examples, params.model.vision.num_frames, size)
        answers = []
        for start in range(0, len(dataset), params.evaluate.batch_size):
            items = [dataset[i] for i in range(start, min(start + params.evaluate.batch_size, len(dataset)))]
            batch = collate_media(items, model, with_answers=False)
            answers += model.generate(batch, max_new_tokens=params.evaluate.max_new_tokens, temperature=args.temperature)
    except (MediaError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if all("Q1" in r for r in records):
        out = [{**r, "pred1": answers[2 * i], "pred2": answers[2 * i + 1]} for i, r in enumerate(records)]
    else:
        out = [{**r, "pred": answers[i]} for i, r in enumerate(records)]
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"{len(out)} predictions written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avlib", description="Ask the audio-visual LLM about videos.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--foundation", default="checkpoints/foundation")
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--model", choices=("av", "vision_only"), default="av")
    parser.add_argument("--temperature", type=float, default=0.0)
    commands = parser.add_subparsers(dest="command", required=True)
    ask_parser = commands.add_parser("ask", help="answer one question about one video")
    ask_parser.add_argument("video")
    ask_parser.add_argument("question")
    ask_parser.add_argument("--json", action="store_true", help="print a JSON object")
    ask_parser.add_argument("--no-audio", action="store_true", help="hear nothing: the video's audio is left out")
    predict_parser = commands.add_parser("predict", help="answer a Video-ChatGPT benchmark file")
    predict_parser.add_argument("benchmark")
    predict_parser.add_argument("--videos", required=True)
    predict_parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "ask":
        try:
            args.question.encode("utf-8")
        except UnicodeEncodeError:
            print("error: the question is not UTF-8 text (the shell passed bytes it could not decode); "
                  "give it as UTF-8", file=sys.stderr)
            return 2
        if not args.question.strip():
            print("error: the question is empty", file=sys.stderr)
            return 2
    return ask(args) if args.command == "ask" else predict(args)


if __name__ == "__main__":
    sys.exit(main())
