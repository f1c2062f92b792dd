"""Stage 5: answers, benchmark files, accuracy by what a question needs, ablations and confidence intervals.

The question the study asks is whether training on audio improves grounding.
So both models answer the same questions about the same clips, and:

* predictions are written in the official Video-ChatGPT formats
  ({video_name, Q, A, pred}; consistency {video_name, Q1, Q2, A, pred1, pred2}),
  so the official scoring scripts read them unchanged;
* the audio-aware benchmark is scored by what each question needs (audio,
  visual, audio-visual);
* the AV model is probed with its audio muted (silence of the same length),
  its frames blanked (black frames) and its audio swapped between clips; muted,
  it is set beside its twin on the clips that have a soundtrack;
* every AV - vision-only difference comes with a paired bootstrap 95 % CI.

How an answer is judged right (its facts, or a closed set's exact match) is
avlib.scoring's; the judges of the Video-ChatGPT criteria are avlib.judge's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avlib.datasets import DataError, read_qa_benchmark, read_video_chatgpt
from avlib.features import FeatureDataset
from avlib.judge import CRITERIA, ReferenceJudge, save_scores, score_benchmark
from avlib.scoring import exact_match, is_correct

# ------------------------------------------------------------------ ablations

ABLATIONS = ("none", "mute_audio", "blank_frames", "swap_audio")


@dataclass
class Neutral:
    """Encoder features of silence and of black frames, computed once per length."""

    model: object
    num_frames: int
    frame_size: int

    def __post_init__(self):
        self._silence: dict[int, torch.Tensor] = {}
        self._black: dict[int, torch.Tensor] = {}

    def silence(self, windows: int) -> torch.Tensor:
        if windows not in self._silence:
            samples = windows * self.model.audio_encoder.window_samples
            (features,) = self.model.audio_encoder([torch.zeros(samples)])
            self._silence[windows] = features.detach()
        return self._silence[windows]

    def black(self, frames: int) -> torch.Tensor:
        if frames not in self._black:
            (features,) = self.model.vision_encoder([torch.zeros(frames, self.frame_size, self.frame_size, 3, dtype=torch.uint8)])
            self._black[frames] = features.detach()
        return self._black[frames]


def ablate(items: Sequence[dict], ablation: str, neutral: Neutral, seed: int = 0) -> list[dict]:
    """Feature items with one modality neutralised; token counts are kept, so the prompts do not change."""
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; valid: {', '.join(ABLATIONS)}")
    items = [dict(item) for item in items]
    if ablation == "mute_audio":
        per_window = neutral.model.audio_encoder.num_audio_tokens
        for item in items:
            if item["audio_features"] is not None:
                item["audio_features"] = neutral.silence(item["audio_features"].shape[0] // per_window)
    elif ablation == "blank_frames":
        patches = neutral.model.vision_encoder.num_patches
        for item in items:
            if item["video_features"] is not None:
                item["video_features"] = neutral.black(item["video_features"].shape[0] - patches)
    elif ablation == "swap_audio":
        # Each clip hears another clip's audio with the same window count (a derangement within each group).
        rng = np.random.default_rng(seed)
        groups: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            if item["audio_features"] is not None:
                groups.setdefault(item["audio_features"].shape[0], []).append(i)
        original = [item["audio_features"] for item in items]
        for members in groups.values():
            if len(members) < 2:
                continue
            shift = int(rng.integers(1, len(members)))
            order = rng.permutation(members).tolist()
            for position, index in enumerate(order):
                items[index]["audio_features"] = original[order[(position + shift) % len(order)]]
    return items


# -------------------------------------------------------------- statistics


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of a - b over paired items, with a percentile bootstrap CI."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired samples must have one equal, non-zero length; got {a.size} and {b.size}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(diff.mean()), "ci": [float(low), float(high)], "n": int(diff.size), "resamples": resamples}


def correct_where(records: Sequence[dict], needs: str) -> list[bool]:
    """Per-item correctness of the records whose question needs `needs`, in order."""
    return [r["correct"] for r in records if r["needs"] == needs]


def muted_against_twin(muted: Sequence[dict], twin: Sequence[dict], heard: Sequence[bool], resamples: int = 2000,
                       seed: int = 0) -> dict:
    """The AV model with its audio muted against its vision-only twin, per needs, on the clips that have a soundtrack.

    muted, twin: the same records in the same order, each with "needs" and "correct"; heard: whether each
    record's clip has a soundtrack. Muting replaces a soundtrack with silence; a clip without one has nothing
    to mute, and the AV model still sees that it has none (its prompt has no audio slots), so "There is no
    sound." is right for it muted or not, where the twin can only guess. Those records are left out and counted.
    """
    if not len(muted) == len(twin) == len(heard):
        raise ValueError(f"muted, twin and heard must be the same records; got {len(muted)}, {len(twin)} and {len(heard)}")
    muted_heard = [m for m, h in zip(muted, heard) if h]
    twin_heard = [t for t, h in zip(twin, heard) if h]
    silent = [m["needs"] for m, h in zip(muted, heard) if not h]
    needs = sorted({m["needs"] for m in muted_heard})
    pairs = {n: (correct_where(muted_heard, n), correct_where(twin_heard, n)) for n in needs}
    return {"difference": {n: paired_bootstrap(m, t, resamples, seed) for n, (m, t) in pairs.items()},
            "items": {"heard": {n: len(m) for n, (m, _) in pairs.items()}, "silent": {n: silent.count(n) for n in needs}}}


def accuracy_by(records: Sequence[dict], key: str = "needs", field: str = "correct") -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for r in records:
        groups.setdefault(r[key], []).append(float(r[field]))
    return {k: float(np.mean(v)) for k, v in sorted(groups.items())}


# ------------------------------------------------------------------ the study

VIDEO_CHATGPT_FILES = ("generic_qa", "temporal_qa", "consistency_qa")
# Short-answer benchmarks, scored item by item and broken down by what a question needs and asks.
QA_BENCHMARKS = ("audio_aware", "music_avqa")
BENCHMARK_TITLES = {"audio_aware": "Audio-aware benchmark (synthetic)", "music_avqa": "MUSIC-AVQA (test)",
                    "video_chatgpt": "Video-ChatGPT benchmark", "activitynet_qa": "ActivityNet-QA (test)"}
# Where a benchmark's files come from, for the message when they are missing.
BENCHMARK_SOURCES = {
    "audio_aware": "the synthetic corpus has it: `python -m avlib.synth --params params.yaml --out data`",
    "music_avqa": "`python -m avlib.prepare music-avqa --src DOWNLOADED_MUSIC_AVQA --out data`",
    "video_chatgpt": "`python -m avlib.prepare video-chatgpt --src DOWNLOADED_BENCHMARK --out data` (the synthetic corpus has one too)",
    "activitynet_qa": "`python -m avlib.prepare activitynet-qa --src DOWNLOADED_ACTIVITYNET_QA --out data`",
}
FAILURE_ALARM = 0.01  # a run whose judge could not score more than this share of items says so loudly
# Official prediction file names that Video-ChatGPT's evaluate_benchmark.sh reads from its PRED_DIR.
OFFICIAL_PRED_FILES = {"correctness_pred": "generic_qa", "detailed_orientation_pred": "generic_qa", "contextual_pred": "generic_qa",
                       "temporal_understanding_pred": "temporal_qa", "consistency_pred": "consistency_qa"}


def score_record(benchmark: str, record: dict, prediction: str) -> bool:
    if benchmark == "music_avqa":
        return exact_match(prediction, record["A"])
    return is_correct(prediction, record["A"], record.get("kind", ""))


def answer_prior(train_examples, records: Sequence[dict], benchmark: str = "audio_aware") -> dict[str, float]:
    """Per kind of question: the accuracy of always giving the answer the training set gives most often to that kind.

    What a model that ignores the clip can reach by learning the answers' frequencies alone; kinds the training
    set does not have are left out.
    """
    counts: dict[str, Counter] = {}
    for example in train_examples:
        counts.setdefault(example.kind, Counter())[example.answer] += 1
    guess = {kind: answers.most_common(1)[0][0] for kind, answers in counts.items()}
    rows = [{"kind": r["kind"], "correct": score_record(benchmark, r, guess[r["kind"]])} for r in records if r.get("kind") in guess]
    return accuracy_by(rows, "kind")


def feature_items(examples, cache) -> list[dict]:
    dataset = FeatureDataset(examples, cache)
    return [dataset[i] for i in range(len(dataset))]


def benchmark_dir(data_root: Path, name: str) -> Path:
    folder = Path(data_root) / "benchmarks" / name
    if not folder.is_dir():
        raise DataError(f"{folder}: missing, but evaluate.benchmarks lists {name!r}; {BENCHMARK_SOURCES[name]}, "
                        "or take it out of evaluate.benchmarks")
    return folder


def predict_video_chatgpt(model, bench_dir, videos_dir, cache, cfg) -> dict[str, list[dict]]:
    """Predictions for the three Video-ChatGPT files, in the official formats."""
    out = {}
    for name in VIDEO_CHATGPT_FILES:
        path = bench_dir / f"{name}.json"
        records = json.loads(path.read_text())
        examples = read_video_chatgpt(path, videos_dir)
        answers = model.answer(feature_items(examples, cache), cfg.batch_size, cfg.max_new_tokens, cfg.temperature)
        if name == "consistency_qa":
            out[name] = [{**r, "pred1": answers[2 * i], "pred2": answers[2 * i + 1]} for i, r in enumerate(records)]
        else:
            out[name] = [{**r, "pred": answers[i]} for i, r in enumerate(records)]
    return out


def write_official_predictions(predictions: dict[str, list[dict]], folder: str | Path) -> Path:
    """The five files, named as the official evaluate_benchmark.sh reads them from its PRED_DIR (no extension)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in OFFICIAL_PRED_FILES.items():
        (folder / name).write_text(json.dumps(predictions[source], indent=1))
    return folder


def evaluate_qa(benchmark: str, params, data_root: Path, models: dict, cache, out_dir: Path, progress: bool = False) -> dict:
    """Both models on a short-answer benchmark: accuracy by needs and by kind, paired CIs, and the AV model's ablations."""
    cfg = params.evaluate
    path = benchmark_dir(data_root, benchmark) / "qa.json"
    records = json.loads(path.read_text())
    items = feature_items(read_qa_benchmark(path, data_root / "clips"), cache)
    scored = {}
    for name, model in models.items():
        answers = model.answer(items, cfg.batch_size, cfg.max_new_tokens, cfg.temperature, progress)
        scored[name] = [{**r, "pred": a, "correct": score_record(benchmark, r, a)} for r, a in zip(records, answers)]
        (out_dir / f"{benchmark}_{name}.json").write_text(json.dumps(scored[name], indent=1))
    needs = sorted({r["needs"] for r in records})
    result: dict = {name: accuracy_by(rows) for name, rows in scored.items()}
    result["by_kind"] = {name: accuracy_by(rows, "kind") for name, rows in scored.items()}
    result["items"] = {n: len(correct_where(scored["av"], n)) for n in needs}
    result["difference"] = {
        n: paired_bootstrap(correct_where(scored["av"], n), correct_where(scored["vision_only"], n), cfg.bootstrap_resamples, params.seed)
        for n in needs
    }
    neutral = Neutral(models["av"], params.model.vision.num_frames, cache.spec.frame_size)
    ablations = {}
    for ablation in ABLATIONS[1:]:
        answers = models["av"].answer(ablate(items, ablation, neutral, params.seed), cfg.batch_size,
                                   cfg.max_new_tokens, cfg.temperature, progress)
        rows = [{**r, "correct": score_record(benchmark, r, a)} for r, a in zip(records, answers)]
        accuracy = accuracy_by(rows)
        ablations[ablation] = {"accuracy": accuracy,
                               "delta": {n: accuracy[n] - result["av"][n] for n in needs},
                               "delta_ci": {n: paired_bootstrap(correct_where(rows, n), correct_where(scored["av"], n),
                                                                cfg.bootstrap_resamples, params.seed)["ci"] for n in needs}}
        if ablation == "mute_audio":
            heard = [item["audio_features"] is not None for item in items]
            ablations[ablation]["against_twin"] = muted_against_twin(rows, scored["vision_only"], heard,
                                                                     cfg.bootstrap_resamples, params.seed)
    result["ablations"] = ablations
    return result


def evaluate_video_chatgpt(params, data_root: Path, models: dict, cache, out_dir: Path, judge, progress: bool = False) -> dict:
    """Both models' predictions in the official formats (and file names), scored on the five criteria by `judge`."""
    cfg = params.evaluate
    bench_dir = benchmark_dir(data_root, "video_chatgpt")
    judged = {}
    for name, model in models.items():
        predictions = predict_video_chatgpt(model, bench_dir, data_root / "clips", cache, cfg)
        for file, records in predictions.items():
            (out_dir / f"video_chatgpt_{name}_{file}.json").write_text(json.dumps(records, indent=1))
        write_official_predictions(predictions, out_dir / "video_chatgpt_official" / name)
        judged[name] = score_benchmark(judge, predictions, progress)
    save_scores(out_dir / "video_chatgpt_scores.json", judge, judged)  # per item: `python -m avlib.judge agree` compares judges
    result: dict = {}
    accounting: dict = {}
    for name, scores in judged.items():
        result[name], accounting[name] = {}, {}
        for c in CRITERIA:
            scored = [s for s in scores[c] if s is not None]
            result[name][c] = float(np.mean(scored)) if scored else None
            accounting[name][c] = {"scored": len(scored), "failed": len(scores[c]) - len(scored),
                                   "mean_failures_as_zero": float(np.mean([s or 0.0 for s in scores[c]])) if scores[c] else None}
    result["accounting"] = accounting  # mean over scored items above; failures counted here, and as 0 here
    result["difference"] = {}
    for c in CRITERIA:
        pairs = [(a, b) for a, b in zip(judged["av"][c], judged["vision_only"][c]) if a is not None and b is not None]
        if pairs:
            result["difference"][c] = paired_bootstrap([a for a, _ in pairs], [b for _, b in pairs], cfg.bootstrap_resamples, params.seed)
    failed = sum(a["failed"] for per_model in accounting.values() for a in per_model.values())
    total = sum(a["failed"] + a["scored"] for per_model in accounting.values() for a in per_model.values())
    if total and failed / total > FAILURE_ALARM:
        result["warning"] = (f"{failed} of {total} judgements ({100 * failed / total:.1f} %) could not be scored: the means "
                             "above leave them out; see accounting for the means with failures as 0")
    result["items"] = {f: len(json.loads((bench_dir / f"{f}.json").read_text())) for f in VIDEO_CHATGPT_FILES}
    return result


def evaluate_activitynet_qa(params, data_root: Path, models: dict, cache, out_dir: Path, judge, progress: bool = False) -> dict:
    """Both models on ActivityNet-QA, judged the benchmark's way: yes/no and a 0-5 score per item; accuracy and mean score."""
    cfg = params.evaluate
    path = benchmark_dir(data_root, "activitynet_qa") / "qa.json"
    records = json.loads(path.read_text())
    items = feature_items(read_qa_benchmark(path, data_root / "clips"), cache)
    judged = {}
    for name, model in models.items():
        answers = model.answer(items, cfg.batch_size, cfg.max_new_tokens, cfg.temperature, progress)
        predictions = [{"video_name": r["video_name"], "Q": r["Q"], "A": r["A"], "pred": a, "question_id": r.get("question_id")}
                       for r, a in zip(records, answers)]
        (out_dir / f"activitynet_qa_{name}.json").write_text(json.dumps(predictions, indent=1))  # the official format
        judged[name] = [judge.judge_qa(p["Q"], p["A"], p["pred"]) for p in predictions]
    result: dict = {}
    for name, verdicts in judged.items():
        scored = [v for v in verdicts if v is not None]
        result[name] = {"accuracy": float(np.mean([v[0] == "yes" for v in scored])) if scored else None,
                        "score": float(np.mean([v[1] for v in scored])) if scored else None,
                        "scored": len(scored), "failed": len(verdicts) - len(scored),
                        "score_failures_as_zero": float(np.mean([v[1] if v else 0.0 for v in verdicts])) if verdicts else None}
    pairs = [(a, b) for a, b in zip(judged["av"], judged["vision_only"]) if a is not None and b is not None]
    result["difference"] = {}
    if pairs:
        result["difference"] = {
            "accuracy": paired_bootstrap([a[0] == "yes" for a, _ in pairs], [b[0] == "yes" for _, b in pairs], cfg.bootstrap_resamples, params.seed),
            "score": paired_bootstrap([a[1] for a, _ in pairs], [b[1] for _, b in pairs], cfg.bootstrap_resamples, params.seed),
        }
    failed = sum(result[m]["failed"] for m in judged)
    if failed / max(1, sum(len(v) for v in judged.values())) > FAILURE_ALARM:
        result["warning"] = f"{failed} judgements could not be scored: accuracy and score leave them out (score_failures_as_zero counts them)"
    result["items"] = len(records)
    return result


def run_study(params, data_root, models: dict, cache, out_dir, judge=None, progress: bool = False) -> dict:
    """Evaluate the AV model and its vision-only twin on every benchmark in evaluate.benchmarks.

    models: {"av": AVLM, "vision_only": AVLM}. Writes predictions and results.md
    under out_dir; returns the metrics (metrics/study.json's content).
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    judge = judge or ReferenceJudge()
    if hasattr(judge, "check") and {"video_chatgpt", "activitynet_qa"} & set(params.evaluate.benchmarks):
        judge.check()  # the endpoint, key and model, before minutes of answers are spent
    synthetic = params.corpus.profile != "paper"
    metrics: dict = {"judge": judge.name, "benchmarks": list(params.evaluate.benchmarks),
                     "data": f"synthetic corpus ({params.corpus.profile})" if synthetic else "prepared real data"}
    for name in params.evaluate.benchmarks:
        if name in QA_BENCHMARKS:
            metrics[name] = evaluate_qa(name, params, data_root, models, cache, out_dir, progress)
        elif name == "video_chatgpt":
            metrics[name] = evaluate_video_chatgpt(params, data_root, models, cache, out_dir, judge, progress)
        elif name == "activitynet_qa":
            metrics[name] = evaluate_activitynet_qa(params, data_root, models, cache, out_dir, judge, progress)
        else:
            raise ValueError(f"unknown benchmark {name!r}; valid: {', '.join([*QA_BENCHMARKS, 'video_chatgpt', 'activitynet_qa'])}")
    metrics["judge_info"] = judge.describe()  # model, prompt version (and reply dates) of every judged score
    if hasattr(judge, "stats"):
        metrics["judge_stats"] = {k: v for k, v in vars(judge.stats).items() if k != "failed_items"}
    metrics["warnings"] = [f"{name}: {metrics[name]['warning']}" for name in params.evaluate.benchmarks if "warning" in metrics[name]]
    (out_dir / "results.md").write_text(results_table(metrics))
    return metrics


def _judge_label(metrics: dict) -> str:
    info = metrics.get("judge_info") or {"judge": metrics["judge"]}
    if info.get("model") is None:
        return (f"judge: {info['judge']}, an offline stand-in for the benchmark's GPT judge; its scores are not comparable "
                "with published GPT-judged ones")
    return f"judge: {info['model']}, prompts {info.get('prompt_version')}, temperature {info.get('temperature') or 'API default'}"


def results_table(metrics: dict) -> str:
    """The study's results as markdown, one section per benchmark, each saying which data and which judge made it."""
    synthetic = metrics.get("data", "").startswith("synthetic")
    lines: list[str] = [f"> **{w}**" for w in metrics.get("warnings", [])]
    lines += [f"Data: {metrics.get('data', 'unknown')}." + (
        " Its Video-ChatGPT and ActivityNet-QA-style questions are synthetic sets in the benchmarks' formats, not the"
        " benchmarks themselves." if synthetic else ""), ""]
    for name in metrics["benchmarks"]:
        result, title = metrics[name], BENCHMARK_TITLES[name]
        if synthetic and name == "video_chatgpt":
            title = "Video-ChatGPT-format questions (synthetic)"
        if name in QA_BENCHMARKS:
            needs = list(result["difference"])
            lines += [f"### {title}: accuracy by what the question needs", "",
                      "| needs | items | audio-visual model | vision-only twin | difference [95% CI] |", "|---|---|---|---|---|"]
            for n in needs:
                diff = result["difference"][n]
                lines.append(f"| {n} | {result['items'][n]} | {result['av'][n]:.3f} | {result['vision_only'][n]:.3f} | "
                             f"{diff['mean']:+.3f} [{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}] |")
            lines += ["", f"### {title}: accuracy by what is asked", "", "| kind | audio-visual model | vision-only twin |", "|---|---|---|"]
            for kind, value in result["by_kind"]["av"].items():
                lines.append(f"| {kind} | {value:.3f} | {result['by_kind']['vision_only'][kind]:.3f} |")
            lines += ["", f"### {title}: ablations of the audio-visual model (change in accuracy)", "",
                      "| ablation | " + " | ".join(needs) + " |", "|---|" + "---|" * len(needs)]
            for ablation, values in result["ablations"].items():
                lines.append(f"| {ablation.replace('_', ' ')} | " + " | ".join(f"{values['delta'][n]:+.3f}" for n in needs) + " |")
            against = result["ablations"].get("mute_audio", {}).get("against_twin")
            if against:
                lines += ["", f"### {title}: the audio-visual model muted against the vision-only twin, on clips with a soundtrack",
                          "", "| needs | items (silent clips left out) | muted AV - twin [95% CI] |", "|---|---|---|"]
                for n, diff in against["difference"].items():
                    lines.append(f"| {n} | {against['items']['heard'][n]} ({against['items']['silent'][n]}) | "
                                 f"{diff['mean']:+.3f} [{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}] |")
        elif name == "video_chatgpt":
            lines += [f"### {title}, five criteria (0-5; {_judge_label(metrics)})", "",
                      "| criterion | audio-visual model | vision-only twin | difference [95% CI] | unscored (AV / twin) |",
                      "|---|---|---|---|---|"]
            accounting = result.get("accounting", {})
            for c, diff in result["difference"].items():
                failed = " / ".join(str(accounting.get(m, {}).get(c, {}).get("failed", "?")) for m in ("av", "vision_only"))
                lines.append(f"| {c} | {result['av'][c]:.2f} | {result['vision_only'][c]:.2f} | "
                             f"{diff['mean']:+.2f} [{diff['ci'][0]:+.2f}, {diff['ci'][1]:+.2f}] | {failed} |")
        else:
            lines += [f"### {title} ({_judge_label(metrics)})", "",
                      "| measure | audio-visual model | vision-only twin | difference [95% CI] |", "|---|---|---|---|"]
            for measure, digits in (("accuracy", 3), ("score", 2)):
                diff = result["difference"].get(measure)
                ci = f"{diff['mean']:+.{digits}f} [{diff['ci'][0]:+.{digits}f}, {diff['ci'][1]:+.{digits}f}]" if diff else "n/a"
                values = [result[m][measure] for m in ("av", "vision_only")]
                lines.append(f"| {measure} | " + " | ".join("n/a" if v is None else f"{v:.{digits}f}" for v in values) + f" | {ci} |")
        lines.append("")
    return "\n".join(lines)
