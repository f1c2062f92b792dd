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

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, Markdown, display

from avlib.config import load_params
from avlib.evaluate import QA_BENCHMARKS, run_study
from avlib.judge import make_judge
from avlib.plots import save_figures
from avlib.runtime import configure as configure_runtime, for_inference
from avlib.stages import load_trained_model, open_cache, pretrained_parts

params = load_params(params_file)
configure_runtime(params.runtime)  # the same CPU arithmetic on every Intel CPU (avlib/runtime.py says where not)
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
# ## The evaluation, in steps
#
# ### 1. Accuracy by what is asked, against the answer prior
#
# A model that ignored the clip entirely could still learn which answers are common: always giving
# the training set's most frequent answer to each kind of question is the **answer prior**. A kind
# where a model does no better than its prior was not learned from the clip.

# %%
import numpy as np
import pandas as pd

from avlib.datasets import read_corpus_split
from avlib.evaluate import answer_prior, correct_where

qa = next(b for b in params.evaluate.benchmarks if b in QA_BENCHMARKS)  # audio_aware, or MUSIC-AVQA on real data
av = json.loads((Path(predictions_dir) / f"{qa}_av.json").read_text())
vo = json.loads((Path(predictions_dir) / f"{qa}_vision_only.json").read_text())
prior = answer_prior(read_corpus_split(data_dir, "video_instructions_train"), av, qa)
kinds = pd.DataFrame({
    "needs": pd.Series({r["kind"]: r["needs"] for r in av}),
    "items": pd.Series([r["kind"] for r in av]).value_counts(),
    "audio-visual model": pd.Series(metrics[qa]["by_kind"]["av"]),
    "vision-only twin": pd.Series(metrics[qa]["by_kind"]["vision_only"]),
    "answer prior": pd.Series(prior, dtype=float),
}).sort_values(["needs", "items"], ascending=[True, False])
kinds.round(3)

# %% [markdown]
# ### 2. The paired bootstrap, in a few lines
#
# Both models answered the same questions, so each question gives one paired difference (1, 0 or
# -1 on a right/wrong scale). Resampling the questions with replacement many times and taking the
# middle 95 % of the resampled means gives the confidence interval the study reports. Here it is
# recomputed from the prediction files, for the audio questions:

# %%
a = np.array(correct_where(av, "audio"), dtype=float)  # 1 where the AV model was right
b = np.array(correct_where(vo, "audio"), dtype=float)  # the twin, same questions, same order
difference = a - b
rng = np.random.default_rng(params.seed)
resampled = difference[rng.integers(0, difference.size, size=(params.evaluate.bootstrap_resamples, difference.size))].mean(axis=1)
low, high = np.quantile(resampled, [0.025, 0.975])
print(f"{difference.size} paired audio questions: AV - twin = {difference.mean():+.3f}, 95 % CI [{low:+.3f}, {high:+.3f}]")
reported = metrics[qa]["difference"]["audio"]["ci"]
print(f"reported in {metrics_file}: [{reported[0]:+.3f}, {reported[1]:+.3f}]")
assert np.allclose([low, high], reported)

fig, ax = plt.subplots(figsize=(7, 2.8))
ax.hist(resampled, bins=40, color="#2a7ab0")
for edge in (low, high):
    ax.axvline(edge, color="black", linestyle="--", linewidth=1)
ax.axvline(0, color="#c9a227", linewidth=2, label="no difference")
ax.set_xlabel("mean of AV - twin over one resample of the audio questions")
ax.set_ylabel("resamples")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
fig.tight_layout()

# %% [markdown]
# ### 3. What the model hears
#
# For a few test clips that need audio: what the clip shows and sounds like, and the answers of the
# AV model with its own audio, with its audio muted (silence of the same length), with another
# clip's audio, and of the twin. The ablations keep every token count, so only what the slots hold
# changes.

# %%
from avlib.audio_encoder import first_window, log_mel
from avlib.datasets import read_qa_benchmark
from avlib.evaluate import Neutral, ablate, feature_items
from avlib.media import load_clip

examples = read_qa_benchmark(Path(data_dir) / "benchmarks" / qa / "qa.json", Path(data_dir) / "clips")
audio_rows = [i for i, r in enumerate(av) if r["needs"] == "audio"]
picked, kinds_seen, videos_seen = [], set(), set()
for i in audio_rows:  # one question per kind of audio question, each about another clip
    if av[i]["kind"] not in kinds_seen and av[i]["video_name"] not in videos_seen:
        picked.append(i)
        kinds_seen.add(av[i]["kind"])
        videos_seen.add(av[i]["video_name"])
pool = list(dict.fromkeys(picked + audio_rows[:40]))  # the swap gives each clip the audio of another from these
chosen = [pool.index(i) for i in picked]
items = feature_items([examples[i] for i in pool], cache)
neutral = Neutral(models["av"], params.model.vision.num_frames, cache.spec.frame_size)
heard = {"AV, its audio": [av[pool[k]]["pred"] for k in chosen]}  # as scored above
for ablation, label in (("mute_audio", "AV, muted"), ("swap_audio", "AV, another clip's audio")):
    changed = ablate(items, ablation, neutral, params.seed)
    heard[label] = models["av"].answer([changed[k] for k in chosen], max_new_tokens=params.evaluate.max_new_tokens)
heard["twin"] = [vo[pool[k]]["pred"] for k in chosen]

fig, axes = plt.subplots(len(chosen), 2, figsize=(10, 2.2 * len(chosen)), gridspec_kw={"width_ratios": [2, 1]}, squeeze=False)
for row, k in enumerate(chosen):
    clip = load_clip(examples[pool[k]].media, num_frames=params.model.vision.num_frames)
    axes[row, 0].imshow(np.concatenate(list(clip.frames), axis=1))
    axes[row, 0].set_title(examples[pool[k]].question, fontsize=9)
    mel = log_mel(first_window(clip.audio, params.model.audio.window_seconds)[None], params.model.audio.n_mels)[0]
    axes[row, 1].imshow(mel, origin="lower", aspect="auto", cmap="magma")
    axes[row, 1].set_ylabel("mel bin")
    axes[row, 1].set_xlabel("10 ms frames")
    axes[row, 1].grid(False)
    axes[row, 0].axis("off")
fig.tight_layout()
pd.DataFrame({"question": [examples[pool[k]].question for k in chosen], "reference": [examples[pool[k]].answer for k in chosen],
              **heard})

# %% [markdown]
# ### 4. Which input does an answer rest on?
#
# Gradient x input (`avlib/attribution.py`): for the first answer token the AV model would give,
# how much of its log-probability, to first order, comes from the audio slots, the video slots
# and the text of the prompt. A rough, local measure; what matters is how it moves with what the
# question needs.

# %%
from avlib.attribution import slot_shares

per_needs = 40
rows = []
for needs in sorted({r["needs"] for r in av}):
    indices = [i for i, r in enumerate(av) if r["needs"] == needs][:per_needs]
    for share in slot_shares(models["av"], feature_items([examples[i] for i in indices], cache)):
        rows.append({"needs": needs, **share})
shares = pd.DataFrame(rows).groupby("needs")[["audio", "video", "text"]].mean()
ax = shares.plot.bar(stacked=True, figsize=(7, 3), color=["#d1495b", "#2a7ab0", "#bbbbbb"], rot=0)
ax.set_ylabel(f"share of |gradient x input|\n(mean over {per_needs} questions)")
ax.set_xlabel("what the question needs")
ax.legend(title="slots", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
ax.figure.tight_layout()
shares.round(3)

# %% [markdown]
# ### 5. The Video-ChatGPT criteria, and the judge that scores them
#
# The benchmark asks a judge model to score each answer from 0 to 5 on five criteria, each against
# a human-written reference answer:
#
# | criterion | asks | questions |
# |---|---|---|
# | correctness | is what the answer says true? | generic |
# | detail | does it cover the reference's main points, specifically? | generic |
# | context | does it fit the video as a whole, with nothing out of place? | generic |
# | temporal | does it get the order of events right? | temporal |
# | consistency | do two phrasings of one question get compatible, correct answers? | consistency pairs |
#
# Published scores come from a GPT judge (`evaluate.judge: chat`). The tiny profiles use the
# `reference` judge instead: offline and deterministic, it reads the closed set of facts the
# synthetic corpus is made of (colour, shape, word, sound, ...) and scores precision (correctness),
# recall (detail), their harmonic mean (context), recall with the first event checked (temporal)
# and agreement between the pair (consistency). It is a stand-in that makes the study run without
# a paid endpoint, not the benchmark's judge: its numbers are not comparable with published ones.

# %%
if "video_chatgpt" in metrics:
    chat = metrics["video_chatgpt"]
    criteria_table = pd.DataFrame({
        "audio-visual model": pd.Series(chat["av"]), "vision-only twin": pd.Series(chat["vision_only"]),
        "difference": pd.Series({c: d["mean"] for c, d in chat["difference"].items()}),
        "95 % CI": pd.Series({c: f"[{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]" for c, d in chat["difference"].items()}),
    }).drop(index="accounting", errors="ignore")
    print("judge:", metrics["judge_info"])
    display(criteria_table.round(2))

# %% [markdown]
# ### 6. Lost in the features, or in the LLM?
#
# A kind the models answer poorly has lost its fact somewhere: in the frozen encoders and the
# pooling, or in the LLM that reads their tokens. A **linear probe** tells which. It is a single
# linear layer trained on the training clips' cached features to name the fact, and scored on the
# test clips: if even it reads the fact, the information reaches the LLM, and what is missing is
# the LLM's reading of it. Each fact is probed from the tokens the LLM receives: a video fact from
# the T per-frame (temporal) tokens in order and from the P per-patch (spatial) tokens, an audio
# fact from the first window's audio tokens; the better view is shown. `python
# benchmarks/feature_probes.py` prints every view, the mean-pooled ones too.

# %%
from avlib.probes import KIND_FACTS, VIDEO_FACTS, clip_views, probe_fact

lost = None
if (Path(data_dir) / "clips.json").is_file():  # the synthetic corpus: every clip's facts are known
    clip_rows = clip_views(data_dir, cache, params.model.vision.num_frames, params.model.audio.num_audio_tokens)
    probed = {}
    for kind, fact in KIND_FACTS.items():
        tried = ("video: temporal", "video: spatial") if fact in VIDEO_FACTS else ("audio: tokens",)
        found = {view: r for view in tried if (r := probe_fact(clip_rows, fact, view, seed=params.seed))}
        if found and kind in kinds.index:
            view, best = max(found.items(), key=lambda item: item[1]["accuracy"])
            probed[kind] = {"chance": best["chance"], "probe": best["accuracy"], "best view": view}
    lost = pd.DataFrame.from_dict(probed, orient="index").join(kinds[["audio-visual model", "vision-only twin"]])
    display(lost.round(2))
else:
    print(f"{data_dir}/clips.json is missing: the probes need the synthetic corpus's clip facts")

# %% [markdown]
# **Where in the LLM?** For a kind whose fact the features carry (probe at least 0.9) and the AV
# model answers poorly (under 0.7), the same probe can follow the fact into the LLM, onto its hidden
# states after each block (depth 0: the embeddings it receives). Four views of them: the temporal
# tokens in order, the last frame's token alone, the temporal tokens averaged, and the prompt's last
# position, the one whose next token is the answer. A fact the tokens in order keep and the answer
# position does not was never gathered to where the answer is made. For the direction of motion the
# last frame alone says most of it (where the shape ended up), the frames averaged only the axis:
# the answer position has to single out one frame, by where it is in the sequence, and an average
# of the frames is what attention gives before it learns to.

# %%
from avlib.datasets import read_qa_benchmark
from avlib.evaluate import benchmark_dir, feature_items
from avlib.probes import reading_probes

unread, reading = [], None
if lost is not None:
    unread = [k for k in lost.index if lost.loc[k, "probe"] >= 0.9 and lost.loc[k, "audio-visual model"] < 0.7]
    train_split = read_corpus_split(data_dir, "video_instructions_train")
    test_split = read_qa_benchmark(benchmark_dir(data_dir, qa) / "qa.json", Path(data_dir) / "clips")
    rows = []
    for kind in unread:
        train_items = feature_items([e for e in train_split if e.kind == kind], cache)
        test_items = feature_items([e for e in test_split if e.kind == kind], cache)
        if not train_items or not test_items:  # a corpus whose training split never asks this kind
            print(f"{kind}: {len(train_items)} training and {len(test_items)} test items, not probed")
            continue
        for name, model in models.items():
            rows += [{"kind": kind, "model": name, **row} for row in
                     reading_probes(model, train_items, test_items, params.model.vision.num_frames, seed=params.seed)]
    if rows:
        reading = pd.DataFrame(rows).pivot(index=["kind", "model", "depth"], columns="view", values="accuracy")
        display(reading.round(2))
if lost is not None and reading is None:
    print("no kind is carried by the features and left unread by the AV model: nothing to follow into the LLM")

# %% [markdown]
# ## Summary
#
# Computed from this run:

# %%
def interval(d):
    return f"{d['mean']:+.3f} (95 % CI [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}])"


result = metrics[qa]
audio, visual = result["difference"].get("audio"), result["difference"].get("visual")
lines = []
if audio:
    verdict = "better" if audio["ci"][0] > 0 else ("worse" if audio["ci"][1] < 0 else "not distinguishable from the twin")
    lines.append(f"* On questions that need audio the AV model is {verdict}: AV - twin = {interval(audio)} over {audio['n']} questions.")
if visual:
    verdict = "the two tie (the CI contains 0)" if visual["ci"][0] <= 0 <= visual["ci"][1] else "the two do not tie"
    lines.append(f"* On questions that need only vision {verdict}: AV - twin = {interval(visual)}.")
mute = result["ablations"]["mute_audio"]
if "audio" in mute["delta"]:
    twin_audio = result["vision_only"]["audio"]
    lines.append(f"* Muting its audio moves the AV model's accuracy on audio questions by {mute['delta']['audio']:+.3f}, to "
                 f"{result['av']['audio'] + mute['delta']['audio']:.3f} (the twin: {twin_audio:.3f}).")
at_prior = [k for k in kinds.index if pd.notna(kinds.loc[k, "answer prior"]) and kinds.loc[k, "audio-visual model"] <= kinds.loc[k, "answer prior"] + 0.05]
if at_prior:
    lines.append(f"* Kinds where the AV model does no better than its answer prior (+0.05): {', '.join(at_prior)}: what they ask "
                 "did not reach the answer from the clip.")
if lost is not None:
    partial = [k for k in lost.index if lost.loc[k, "probe"] < 0.9 and lost.loc[k, "audio-visual model"] < 0.7]
    if unread:
        lines.append("* The features carry " + ", ".join(f"{k} (probe {lost.loc[k, 'probe']:.2f}, AV model {lost.loc[k, 'audio-visual model']:.2f})"
                                                     for k in unread) + ": lost in the LLM, which has yet to learn to read them.")
    if reading is not None:
        last = reading.index.get_level_values("depth").max()
        for kind in reading.index.get_level_values("kind").unique():  # the unread kinds that had items to probe
            held = reading.loc[(kind, "av", last)]
            lines.append(f"* {kind.capitalize()} in the AV model's LLM, after its last block: a probe reads it "
                         f"{held['frames in order']:.2f} from the temporal tokens in order, {held['frames averaged']:.2f} "
                         f"from their average and {held['answer position']:.2f} at the answer position: "
                         + ("not gathered where the answer is made." if held["answer position"] < 0.7
                            else "gathered where the answer is made, and still not answered."))
    if partial:
        lines.append("* The features carry only part of " + ", ".join(f"{k} (probe {lost.loc[k, 'probe']:.2f}, chance {lost.loc[k, 'chance']:.2f}, "
                                                                    f"AV model {lost.loc[k, 'audio-visual model']:.2f})" for k in partial)
                     + ": lost partly before the LLM.")
if {"audio", "visual"} <= set(shares.index):
    lines.append(f"* The audio slots carry {shares.loc['audio', 'audio']:.0%} of the gradient x input on audio questions and "
                 f"{shares.loc['visual', 'audio']:.0%} on visual ones.")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Exercises
#
# Each takes a few minutes on a laptop from the committed outputs; `dvc repro -s evaluate` reruns
# this stage alone (about a minute and a half in the tiny profile).
#
# 1. In the table of kinds, which audio questions does the twin still get right more often than
#    chance, and why (compare its column with the answer prior)?
# 2. Rerun the bootstrap cell for the visual questions with 200 and with 5,000 resamples. How much
#    does the interval move, and why is 2,000 enough?
# 3. Pick an audio clip from "What the model hears" and give the AV model a question about it in
#    your own words: `python -m avlib ask data/clips/<clip>.mp4 "..."`, then with `--no-audio`.
# 4. Switch `evaluate.judge` to `chat` against any OpenAI-compatible server you can run locally
#    (the tests use a loopback one), rerun this stage, and compare the criteria with the reference
#    judge's: `python -m avlib.judge agree` takes the two `video_chatgpt_scores.json` files.
# 5. `python benchmarks/feature_probes.py` probes the mean of all video tokens too. Compare it with
#    the temporal tokens for the direction of motion: why does averaging over the frames lose the
#    direction but keep the colour? Which of the two views does Video-ChatGPT's pooling give the LLM?
# 6. Follow the direction into the model that stage 2 left, before any finetuning:
#    `load_trained_model(params, foundation_dir, pretrained)`, then `reading_probes` on it with the
#    direction items of *Where in the LLM?*. How much of what the answer position holds did the
#    finetuning add, and at which depth?
