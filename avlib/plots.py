"""The study's figures, drawn from metrics/study.json's content."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, not windows: notebooks show the saved figures
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

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
    ax.legend(loc="lower right", fontsize=8)


def accuracy_by_needs(metrics: dict, ax=None):
    """Grouped bars: each model's accuracy on audio, visual and audio-visual questions; CI of the difference above."""
    aware = metrics["audio_aware"]
    needs = list(aware["difference"])
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    notes = [f"Δ {aware['difference'][n]['mean']:+.2f}\n[{aware['difference'][n]['ci'][0]:+.2f}, {aware['difference'][n]['ci'][1]:+.2f}]"
             for n in needs]
    _paired_bars(ax, needs, aware, notes, top=1.22)
    ax.set_ylabel("accuracy")
    ax.set_title("Audio-aware benchmark, by what a question needs")
    return ax


def criteria(metrics: dict, ax=None):
    """Both models' mean score (0-5) per Video-ChatGPT criterion, with the 95 % CI of their difference as text."""
    chat = metrics["video_chatgpt"]
    names = list(chat["difference"])
    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    notes = [f"[{chat['difference'][c]['ci'][0]:+.2f}, {chat['difference'][c]['ci'][1]:+.2f}]" for c in names]
    _paired_bars(ax, names, chat, notes, top=6.0)
    ax.set_ylabel(f"score 0-5 ({metrics['judge']} judge)")
    ax.set_title("Video-ChatGPT criteria (95 % CI of the difference above each pair)")
    return ax


def ablation_deltas(metrics: dict, ax=None):
    """Change in the AV model's accuracy when a modality is neutralised, by what a question needs, with 95 % CIs."""
    ablations = metrics["audio_aware"]["ablations"]
    needs = list(metrics["audio_aware"]["difference"])
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
    ax.set_title("Ablations of the audio-visual model")
    ax.legend(title="needs", fontsize=8)
    return ax


def save_figures(metrics: dict, folder: str | Path) -> list[Path]:
    """Write the three figures as PNG files; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid")
    paths = []
    for name, draw in (("accuracy_by_needs", accuracy_by_needs), ("criteria", criteria), ("ablations", ablation_deltas)):
        fig, ax = plt.subplots(figsize=(7, 3.8))
        draw(metrics, ax)
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
