"""The study's figures, drawn from metrics/study.json's content."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from avlib.evaluate import BENCHMARK_TITLES, QA_BENCHMARKS

MODEL_LABELS = {"av": "audio-visual", "vision_only": "vision-only twin"}
COLORS = {"av": "#2a7ab0", "vision_only": "#c9a227"}


def _paired_bars(ax, groups: list[str], values: dict[str, dict[str, float]], notes: list[str], top: float):
    """Both models' bars side by side for each group, a note above each pair."""
    x = np.arange(len(groups))
    for k, name in enumerate(("av", "vision_only")):
        ax.bar(x + (k - 0.5) * 0.38, [values[name][g] for g in groups], 0.38, label=MODEL_LABELS[name], color=COLORS[name])
    for i, note in enumerate(notes):
        ax.annotate(note, (x[i], top * 0.85), ha="center", fontsize=8)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, top)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)  # outside: it never hides a bar


def qa_benchmarks(metrics: dict) -> list[str]:
    """The short-answer benchmarks in these metrics (audio_aware, music_avqa), in the order run."""
    return [b for b in metrics.get("benchmarks", ["audio_aware"]) if b in QA_BENCHMARKS]


def accuracy_by_needs(metrics: dict, ax=None, benchmark: str | None = None):
    """Grouped bars: each model's accuracy on audio, visual and audio-visual questions; CI of the difference above."""
    benchmark = benchmark or qa_benchmarks(metrics)[0]
    aware = metrics[benchmark]
    needs = list(aware["difference"])
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    notes = [f"Δ {aware['difference'][n]['mean']:+.2f}\n[{aware['difference'][n]['ci'][0]:+.2f}, {aware['difference'][n]['ci'][1]:+.2f}]"
             for n in needs]
    _paired_bars(ax, needs, aware, notes, top=1.22)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{BENCHMARK_TITLES[benchmark]}, by what a question needs")
    return ax


def criteria(metrics: dict, ax=None):
    """Both models' mean score (0-5) per Video-ChatGPT criterion, with the 95 % CI of their difference as text."""
    chat = metrics["video_chatgpt"]
    names = list(chat["difference"])
    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    notes = [f"[{chat['difference'][c]['ci'][0]:+.2f}, {chat['difference'][c]['ci'][1]:+.2f}]" for c in names]
    _paired_bars(ax, names, chat, notes, top=6.0)
    ax.set_ylabel(f"score 0-5 ({metrics['judge']} judge)")
    data = "Video-ChatGPT-format questions (synthetic)" if metrics.get("data", "").startswith("synthetic") else "Video-ChatGPT criteria"
    ax.set_title(f"{data} (95 % CI of the difference above each pair)")
    return ax


def ablation_deltas(metrics: dict, ax=None, benchmark: str | None = None):
    """Change in the AV model's accuracy when a modality is neutralised, by what a question needs, with 95 % CIs."""
    benchmark = benchmark or qa_benchmarks(metrics)[0]
    ablations = metrics[benchmark]["ablations"]
    needs = list(metrics[benchmark]["difference"])
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    palette = sns.color_palette("muted", len(needs))
    x = np.arange(len(ablations))
    width = 0.8 / len(needs)
    for k, n in enumerate(needs):
        deltas = [a["delta"][n] for a in ablations.values()]
        errors = np.array([[d - a["delta_ci"][n][0], a["delta_ci"][n][1] - d] for d, a in zip(deltas, ablations.values())]).T
        ax.bar(x + (k - (len(needs) - 1) / 2) * width, deltas, width, yerr=errors, capsize=2, label=n, color=palette[k])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [a.replace("_", " ") for a in ablations])
    ax.set_ylabel("Δ accuracy")
    ax.set_title(f"Ablations of the audio-visual model ({BENCHMARK_TITLES[benchmark]})")
    ax.legend(title="needs", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return ax


def save_figures(metrics: dict, folder: str | Path) -> list[Path]:
    """Write the figures as PNG files; returns their paths.

    accuracy_by_needs.png and ablations.png show the first short-answer benchmark
    (the synthetic audio-aware one, or MUSIC-AVQA); a second gets its name as a
    prefix. criteria.png shows the Video-ChatGPT criteria when they were run.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid")
    figures = []
    for i, benchmark in enumerate(qa_benchmarks(metrics)):
        prefix = "" if i == 0 else f"{benchmark}_"
        figures += [(f"{prefix}accuracy_by_needs", accuracy_by_needs, benchmark), (f"{prefix}ablations", ablation_deltas, benchmark)]
    if "video_chatgpt" in metrics:
        figures.insert(1, ("criteria", criteria, None))
    paths = []
    for name, draw, benchmark in figures:
        fig, ax = plt.subplots(figsize=(8.5, 3.8))
        draw(metrics, ax) if benchmark is None else draw(metrics, ax, benchmark)
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
