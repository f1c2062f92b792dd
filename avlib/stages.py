"""Stage plumbing: what each stage reads, and the model, cache and training run it needs.

The notebooks, `avlib.spread`, the CLI and the accelerate launches all go
through these functions, so a stage runs the same way from each of them. Two
commands run a stage as its own process(es), for several GPUs:

    accelerate launch --config_file configs/accelerate/ddp.yaml -m avlib.stages extract --data data --out features
    accelerate launch --config_file configs/accelerate/ddp.yaml -m avlib.stages train --stage finetune --variant av \
        --out runs/finetune/av --init-from runs/pretrain/audio/final
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from avlib.config import load_params
from avlib.datasets import DataError, read_corpus_split, subsample
from avlib.features import FeatureCache, FeatureDataset, corpus_media, extract, spec_for
from avlib.foundation import MissingData, load_foundation_model
from avlib.runtime import compute_dtype, configure, for_inference
from avlib.train import FINAL, RunResult, train

STAGE_SPLITS = {
    "pretrain_audio": ("speech_to_text", "audio_captions"),
    "pretrain_vision": ("image_captions",),
    "finetune": ("video_instructions_train",),
}


def stage_examples(data_root: str | Path, stage: str, params=None) -> list:
    """The examples a stage trains on. With params, audio pretraining draws at most pretrain.max_speech
    speech-to-text and pretrain.max_captions audio-caption examples (seeded), as the paper's 50K + 50K mix,
    and finetuning repeats each example of a kind in finetune.kind_repeats that many times."""
    if stage not in STAGE_SPLITS:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGE_SPLITS)}")
    caps = {}
    if params is not None:
        caps = {"speech_to_text": params.pretrain.max_speech, "audio_captions": params.pretrain.max_captions}
    examples = [e for split in STAGE_SPLITS[stage]
                for e in subsample(read_corpus_split(data_root, split), caps.get(split) or None, params.seed if params else 0)]
    if stage == "finetune" and params is not None:
        examples = repeat_kinds(examples, params.finetune.kind_repeats)
    return examples


def repeat_kinds(examples: list, repeats: dict[str, int]) -> list:
    """Each example as many times as `repeats` gives for its kind (once where it gives none), in order."""
    present = {e.kind for e in examples}
    missing = sorted(kind for kind, n in repeats.items() if n != 1 and kind not in present)
    if missing:
        raise DataError(f"finetune.kind_repeats names {missing}, which no finetuning example has; the kinds here are "
                        f"{sorted(present)}: fix the name, or give it 1 where the data has no such kind")
    return [e for e in examples for _ in range(repeats.get(e.kind, 1))]


def pretrained_parts(params, pretrain_dir: str | Path) -> list[Path]:
    """What stage 2 saved, for the later stages to load: the audio projector, and the visual one where stage 2 trained it
    (pretrain.train_vision_projector; otherwise the model's builder provides it: Bunny's in the paper profile)."""
    parts = [Path(pretrain_dir) / "audio" / FINAL]
    if params.pretrain.train_vision_projector:
        parts.append(Path(pretrain_dir) / "vision" / FINAL)
    return parts


def finetuned_parts(params, runs_dir: str | Path, variant: str) -> list[Path]:
    """The folders a finetuned model loads in order: stage 2's, then `variant`'s finetuning (av or vision_only);
    raises MissingData naming those not trained yet."""
    parts = [*pretrained_parts(params, Path(runs_dir) / "pretrain"), Path(runs_dir) / "finetune" / variant / FINAL]
    missing = [str(p) for p in parts if not (p / "parts.json").is_file()]
    if missing:
        raise MissingData(f"no trained model at {', '.join(missing)}; run the study first (make repro)")
    return parts


def open_cache(params, model, data_root: str | Path, features_root: str | Path) -> FeatureCache:
    """The feature cache for this model and these parameters (it may still be empty)."""
    size = model.vision_encoder.image_size[0]  # the SigLIP input size, tiny or paper
    dtype = str(compute_dtype()).removeprefix("torch.")  # bf16 features on a GPU are other features
    spec = spec_for(model, params.model.vision.num_frames, size, params.model.vision.feature_layer, dtype)
    return FeatureCache(features_root, spec, data_root)


def load_trained_model(params, foundation: str | Path, trained: Sequence[str | Path], use_audio: bool = True):
    """Stage 1's model with the trained parts of later stages loaded in order (later folders override)."""
    model = load_foundation_model(params, foundation, use_audio=use_audio)
    for folder in trained:
        model.load_trained(folder)
    return model.eval()


def run_stage(
    params,
    stage: str,
    data_root: str | Path,
    foundation: str | Path,
    features: str | Path,
    out: str | Path,
    use_audio: bool = True,
    init_from: Sequence[str | Path] = (),
    **kwargs,
) -> RunResult:
    """Build the model on stage 1's foundation, load earlier stages' outputs, and train `stage` from the feature cache.

    kwargs go to `avlib.train.train` (checkpoint_dir: where resumable state is kept)."""
    model = load_trained_model(params, foundation, init_from, use_audio).train()
    cache = open_cache(params, model, data_root, features)
    dataset = FeatureDataset(stage_examples(data_root, stage, params), cache)
    cfg = {"pretrain_audio": params.pretrain.audio, "pretrain_vision": params.pretrain.vision, "finetune": params.finetune}[stage]
    # What the run starts from: a checkpoint of a run that started elsewhere is not resumed.
    identity = {"use_audio": use_audio, "features": cache.spec.key,
                "init_from": [(Path(p) / "parts.json").read_text() for p in init_from]}
    return train(model, dataset, stage, cfg, out, seed=params.seed, lora=params.finetune.lora, config=params, identity=identity,
                 **kwargs)


def launch_command(launch: str, stage: str, variant: str, params_file: str, data: str, foundation: str, features: str,
                   out: str | Path, init_from: Sequence[str | Path], checkpoint_dir: str | Path) -> list[str]:
    """The command that runs `stage` under `accelerate launch` with the configuration file `launch`."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", launch, "-m", "avlib.stages", "train",
            "--stage", stage, "--variant", variant, "--params", params_file, "--data", data, "--foundation", foundation,
            "--features", features, "--out", str(out), "--checkpoint-dir", str(checkpoint_dir), "--init-from", *map(str, init_from)]


def extract_features(args) -> None:
    """Fill the feature cache, each process its share."""
    from accelerate import PartialState

    params = load_params(args.params)
    configure(params.runtime)
    state = PartialState(cpu=not torch.cuda.is_available())
    model = load_foundation_model(params, args.foundation).eval()
    cache = open_cache(params, model, args.data, args.out)  # the key hashes the weights as stored: before casting
    model = for_inference(model)
    extract(model, corpus_media(args.data), cache, args.batch_size, rank=state.process_index,
            world_size=state.num_processes, progress=state.is_local_main_process)
    state.wait_for_everyone()
    if state.is_main_process:
        print(json.dumps(cache.summary()))


def train_stage(args) -> None:
    """Train one stage: what a notebook launches for several GPUs."""
    params = load_params(args.params)
    configure(params.runtime)
    result = run_stage(params, args.stage, args.data, args.foundation, args.features, args.out,
                       use_audio=args.variant == "av", init_from=args.init_from, checkpoint_dir=args.checkpoint_dir)
    print(json.dumps({"stage": args.stage, "variant": args.variant, "final_loss": result.final_loss, "seconds": result.seconds}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m avlib.stages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("extract", "fill the feature cache"), ("train", "train one stage")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--params", default="params.yaml")
        command.add_argument("--data", default="data")
        command.add_argument("--foundation", default="checkpoints/foundation")
    commands.choices["extract"].add_argument("--out", default="features")
    commands.choices["extract"].add_argument("--batch-size", type=int, default=32)
    training = commands.choices["train"]
    training.add_argument("--stage", required=True, choices=sorted(STAGE_SPLITS))
    training.add_argument("--variant", choices=("av", "vision_only"), default="av")
    training.add_argument("--features", default="features")
    training.add_argument("--out", required=True)
    training.add_argument("--init-from", nargs="*", default=[])
    training.add_argument("--checkpoint-dir", default=None, help="resumable state (default: OUT/checkpoint)")
    args = parser.parse_args(argv)
    extract_features(args) if args.command == "extract" else train_stage(args)


if __name__ == "__main__":
    main()
