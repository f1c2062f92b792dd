"""How much the study's results move with the training seed: stages 2-4 and the evaluation, once per seed.

The committed run is one draw. This experiment keeps stage 1 (the foundation
models and the feature cache, built with params.yaml's seed) and reruns
projector pretraining, both finetunings and the evaluation with each seed
given; seed 0 equals the pipeline's own run. It writes each seed's metrics and
a summary, mean and standard deviation over seeds of every accuracy, criterion
score and AV - twin difference, with each seed's confidence intervals:

    python -m avlib.spread --seeds 0 1 2          # about 8 minutes a seed on 2 cores (tiny)
    python -m avlib.spread --seeds 0 1 2 --reuse-pipeline
                                                  # the pipeline's seed read from its run, not rerun
    make spread                                   # the latter

`--reuse-pipeline` takes the seed that params.yaml gives from the pipeline's
own run (metrics/study.json, reports/predictions) where `dvc status` finds the
pipeline up to date, and refuses otherwise: that seed's rerun computes the same
bits (tested on the smoke study), so it would only spend a third of the time.

Not part of `dvc repro`: it reads the pipeline's stage-1 outputs and writes
runs/spread/ and metrics/spread.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from avlib.config import load_params
from avlib.evaluate import run_study
from avlib.runtime import configure, for_inference
from avlib.stages import load_trained_model, open_cache, pretrained_parts, run_stage


def run_seed(params, seed: int, data: Path, foundation: Path, features: Path, out: Path) -> dict:
    """Stages 2-4 and the evaluation with `seed`; returns the metrics (as metrics/study.json holds them)."""
    params = dataclasses.replace(params, seed=seed)
    pretrain = out / "pretrain"
    run_stage(params, "pretrain_audio", data, foundation, features, pretrain / "audio", progress=False)
    if params.pretrain.train_vision_projector:
        run_stage(params, "pretrain_vision", data, foundation, features, pretrain / "vision", progress=False)
    parts = pretrained_parts(params, pretrain)
    models = {}
    for variant, use_audio in (("av", True), ("vision_only", False)):
        run_stage(params, "finetune", data, foundation, features, out / "finetune" / variant, use_audio=use_audio,
                  init_from=parts, progress=False)
        models[variant] = load_trained_model(params, foundation, [*parts, out / "finetune" / variant / "final"], use_audio)
    cache = open_cache(params, models["av"], data, features)
    models = {name: for_inference(model) for name, model in models.items()}
    return run_study(params, data, models, cache, out / "predictions")


def pipeline_seed(out: Path, metrics: Path = Path("metrics/study.json"), predictions: Path = Path("reports/predictions"),
                  repo: Path = Path(".")) -> dict:
    """The pipeline's own run as a seed of the spread: its metrics, its predictions copied to `out`.

    Refuses where `dvc status` finds any stage of `repo` out of date (its metrics would not be this configuration's)."""
    dvc = Path(sys.executable).with_name("dvc")
    status = subprocess.run([str(dvc) if dvc.exists() else "dvc", "status", "--json"], cwd=repo, capture_output=True, text=True)
    if status.returncode != 0:
        raise RuntimeError(f"dvc status failed in {repo}: {status.stderr.strip()}")
    stale = sorted(json.loads(status.stdout or "{}"))
    if stale:
        raise RuntimeError(f"the pipeline is not up to date ({', '.join(stale)} changed): run `dvc repro` first, "
                           "or drop --reuse-pipeline to rerun that seed")
    result = json.loads((Path(repo) / metrics).read_text())
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "predictions", ignore_errors=True)
    shutil.copytree(Path(repo) / predictions, out / "predictions")
    return result


def _leaves(tree, prefix: str = "") -> dict[str, float]:
    """Flatten the numbers of a metrics tree: {'audio_aware.av.audio': 0.71, ...}."""
    out = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix] = float(tree)
    return out


def summarise(per_seed: dict[int, dict]) -> dict:
    """Mean and sample standard deviation over seeds of every accuracy, score and difference (not counts or CIs)."""
    flat = {seed: _leaves(metrics) for seed, metrics in per_seed.items()}
    keys = sorted(set.intersection(*(set(f) for f in flat.values())))
    keys = [k for k in keys if not any(part in k.split(".") for part in ("ci", "n", "resamples", "items", "scored", "failed"))]
    summary = {}
    for key in keys:
        values = np.array([flat[seed][key] for seed in per_seed])
        summary[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                        "values": [float(v) for v in values]}
    return summary


def table(result: dict) -> str:
    """Markdown: per needs, each model's accuracy as seed 0 and mean +- sd over seeds, then AV - twin with each seed's CI."""
    per_seed, summary = result["per_seed"], result["summary"]
    first = next(iter(per_seed.values()))
    benchmark = next(b for b in first["benchmarks"] if b in ("audio_aware", "music_avqa"))
    seeds = list(per_seed)
    lines = ["| needs | AV: seed 0 / mean ± sd | twin: seed 0 / mean ± sd | AV - twin, mean ± sd | "
             + " | ".join(f"AV - twin, seed {s} [95% CI]" for s in seeds) + " |", "|---|---|---|---|" + "---|" * len(seeds)]
    for needs in first[benchmark]["difference"]:
        cells = []
        for model in ("av", "vision_only"):
            stat = summary[f"{benchmark}.{model}.{needs}"]
            cells.append(f"{per_seed[seeds[0]][benchmark][model][needs]:.3f} / {stat['mean']:.3f} ± {stat['sd']:.3f}")
        diff = summary[f"{benchmark}.difference.{needs}.mean"]
        per = [per_seed[s][benchmark]["difference"][needs] for s in seeds]
        lines.append(f"| {needs} | {cells[0]} | {cells[1]} | {diff['mean']:+.3f} ± {diff['sd']:.3f} | "
                     + " | ".join(f"{d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" for d in per) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m avlib.spread", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--foundation", default="checkpoints/foundation")
    parser.add_argument("--features", default="features")
    parser.add_argument("--out", default="runs/spread")
    parser.add_argument("--metrics", default="metrics/spread.json")
    parser.add_argument("--reuse-pipeline", action="store_true",
                        help="take params.yaml's seed from the pipeline's up-to-date run instead of rerunning it")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) < 2:
        parser.error("give at least two different seeds: a spread needs two draws")
    params = load_params(args.params)
    configure(params.runtime)
    per_seed = {}
    for seed in args.seeds:
        out = Path(args.out) / f"seed{seed}"
        if args.reuse_pipeline and seed == params.seed:
            per_seed[seed] = pipeline_seed(out)
        else:
            per_seed[seed] = run_seed(params, seed, Path(args.data), Path(args.foundation), Path(args.features), out)
        (out / "metrics.json").write_text(json.dumps(per_seed[seed], indent=1) + "\n")
        print(f"seed {seed}: done ({out})", flush=True)
    result = {"seeds": args.seeds, "stage1_seed": params.seed, "summary": summarise(per_seed),
              "per_seed": {str(seed): metrics for seed, metrics in per_seed.items()}}
    Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(args.metrics).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(result['summary'])} figures summarised over seeds {args.seeds} in {args.metrics}\n")
    print(table(result))


if __name__ == "__main__":
    main()
