# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Evaluation: does training on audio improve grounding?
#
# **Goal.** Both models answer the same questions about the same held-out clips:
#
# * the **audio-aware benchmark**, where each question is labelled with what it needs (audio,
#   visual, audio-visual);
# * the **Video-ChatGPT benchmark**, in its official formats, scored on its five criteria;
# * **ablations** of the AV model: audio muted, frames blanked, audio swapped between clips.
#
# Every difference comes with a paired bootstrap 95 % confidence interval.

# %% tags=["parameters"]
params_file = "params.yaml"  # the study's parameters
data_dir = "data"  # the corpus
foundation_dir = "checkpoints/foundation"  # stage 1's models
features_dir = "features"  # stage 1's feature cache
runs_dir = "runs"  # stages 2-4
predictions_dir = "reports/predictions"  # prediction files, official formats
figures_dir = "reports/figures"  # the figures
metrics_file = "metrics/study.json"  # DVC metrics
judge_cache_dir = "judge_cache"  # the chat judge's replies: outside DVC's outputs, so a rerun asks nothing twice

# %%
import json
from pathlib import Path

from IPython.display import Image, Markdown, display

from avlib.config import load_params
from avlib.evaluate import QA_BENCHMARKS, run_study
from avlib.judge import make_judge
from avlib.plots import save_figures
from avlib.runtime import configure as configure_runtime, for_inference
from avlib.stages import load_trained_model, open_cache, pretrained_parts

params = load_params(params_file)
configure_runtime(params.runtime)  # the same CPU arithmetic on every machine (avlib/runtime.py)
runs = Path(runs_dir)
pretrained = pretrained_parts(params, runs / "pretrain")
models = {
    "av": load_trained_model(params, foundation_dir, [*pretrained, runs / "finetune" / "av" / "final"], use_audio=True),
    "vision_only": load_trained_model(params, foundation_dir, [*pretrained, runs / "finetune" / "vision_only" / "final"], use_audio=False),
}
cache = open_cache(params, models["av"], data_dir, features_dir)  # keyed by the weights as stored
models = {name: for_inference(model) for name, model in models.items()}  # on a GPU, if there is one, in bf16

# %% [markdown]
# ## The judge
#
# `reference` is offline and deterministic: it scores an answer by the facts it states against
# the reference's facts. `chat` asks an OpenAI-compatible endpoint; its key is read from the
# environment variable named in `params.yaml`, never from here.

# %%
judge = make_judge(params.evaluate, judge_cache_dir)
print("judge:", judge.name)

# %%
metrics = run_study(params, data_dir, models, cache, predictions_dir, judge)
Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
Path(metrics_file).write_text(json.dumps(metrics, indent=1) + "\n")
for warning in metrics["warnings"]:  # a judge that could not score more than 1 % of the items, say
    print(f"WARNING: {warning}")
display(Markdown((Path(predictions_dir) / "results.md").read_text()))

# %% [markdown]
# ## Figures

# %%
for path in save_figures(metrics, figures_dir):
    display(Image(filename=str(path)))

# %% [markdown]
# ## A few answers side by side

# %%
qa = next(b for b in params.evaluate.benchmarks if b in QA_BENCHMARKS)  # audio_aware, or MUSIC-AVQA on real data
av = json.loads((Path(predictions_dir) / f"{qa}_av.json").read_text())
vo = json.loads((Path(predictions_dir) / f"{qa}_vision_only.json").read_text())
for a, v in [(a, v) for a, v in zip(av, vo) if a["needs"] == "audio"][:6]:
    print(f"{a['Q']}  reference: {a['A']}\n    AV: {a['pred']} ({'right' if a['correct'] else 'wrong'})"
          f"   vision-only: {v['pred']} ({'right' if v['correct'] else 'wrong'})")

# %% [markdown]
# ## Summary
#
# * On questions that need audio, the vision-only twin can only guess; the AV model hears.
# * Muting the AV model's audio, or swapping it between clips, shows how much its answers rest on
#   what it hears; blanking the frames does the same for vision.
#
# ## Exercises
#
# 1. Which audio questions does the vision-only twin still get right, and why (look at the
#    answer priors: how often is each answer the reference)?
# 2. Switch `evaluate.judge` to `chat` with a local OpenAI-compatible server, and compare the
#    criteria with the reference judge's.
# 3. Add an ablation that shifts the audio by one window for long clips. What should it break?
