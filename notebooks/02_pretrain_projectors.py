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
# # 2. Projector pretraining: teaching the LLM to read audio (and images)
#
# **Goal.** Whisper's features and phi-2's word embeddings live in different spaces. A projector
# (`mlp2x_gelu`: Linear, GELU, Linear) maps one into the other. Here the audio projector is trained
# on speech-to-text and audio captioning while *everything else stays frozen*: the only way to
# lower the loss is to make the projected audio tokens say what was heard. The paper takes the
# visual projector from Bunny; the tiny profiles pretrain it the same way on image captions.

# %% tags=["parameters"]
params_file = "params.yaml"  # the study's parameters
data_dir = "data"  # the corpus
foundation_dir = "checkpoints/foundation"  # stage 1's models
features_dir = "features"  # stage 1's feature cache
out_dir = "runs/pretrain"  # audio/ and vision/ land here
checkpoints_dir = "checkpoints/training"  # resumable training state: outside DVC's outputs, so a rerun resumes

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from avlib.config import load_params
from avlib.datasets import read_corpus_split, read_qa_benchmark
from avlib.features import FeatureDataset
from avlib.runtime import configure as configure_runtime, for_inference
from avlib.template import IGNORE_INDEX
from avlib.stages import load_trained_model, open_cache, run_stage

params = load_params(params_file)
configure_runtime(params.runtime)  # the same CPU arithmetic on every Intel CPU (avlib/runtime.py says where not)

# %% [markdown]
# ## One training example, token by token
#
# A speech-to-text example renders in the Bunny chat template. Its `<audio>` placeholder is
# expanded to exactly as many slots as the clip has audio feature vectors; the model later fills
# those slots with projected audio. Only the answer is supervised: every other label is
# `IGNORE_INDEX` (-100).

# %%
model = load_trained_model(params, foundation_dir, [])
cache = open_cache(params, model, data_dir, features_dir)
example = read_corpus_split(data_dir, "speech_to_text")[0]
item = FeatureDataset([example], cache)[0]
batch = model.collate([item])
ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
print({k: tuple(v.shape) if hasattr(v, "shape") else f"{len(v)} tensors" if isinstance(v, list) else v for k, v in batch.items()})
tokens = model.tokenizer.convert_ids_to_tokens(ids)
runs, last = [], None
for token, label in zip(tokens, labels):
    kind = "audio slot" if token == "<audio>" else ("answer (supervised)" if label != IGNORE_INDEX else "prompt")
    if runs and runs[-1][0] == kind:
        runs[-1][1] += 1
    else:
        runs.append([kind, 1])
print(" | ".join(f"{kind} x{n}" for kind, n in runs))
print("answer:", repr(example.answer))

# %% [markdown]
# ## What trains and what is frozen

# %%
model.configure_training("pretrain_audio")
counts = {}
for name, p in model.named_parameters():
    part = name.split(".")[0]
    counts.setdefault(part, [0, 0])[p.requires_grad] += p.numel()
print(pd.DataFrame(counts, index=["frozen", "trainable"]).T)

# %% [markdown]
# ## Train the audio projector, then the visual one
#
# The paper does not pretrain the visual projector: it loads Bunny's, already trained on
# image-caption pairs (`pretrain.train_vision_projector: false` in the paper profiles). The tiny
# profiles have no Bunny, so they pretrain theirs here on the corpus's image captions.

# %%
audio = run_stage(params, "pretrain_audio", data_dir, foundation_dir, features_dir, Path(out_dir) / "audio",
                  checkpoint_dir=Path(checkpoints_dir) / "pretrain_audio")
print(f"audio: final loss {audio.final_loss:.3f} in {audio.seconds:.0f} s")
projectors = ["audio"]
if params.pretrain.train_vision_projector:
    vision = run_stage(params, "pretrain_vision", data_dir, foundation_dir, features_dir, Path(out_dir) / "vision",
                       checkpoint_dir=Path(checkpoints_dir) / "pretrain_vision")
    print(f"vision: final loss {vision.final_loss:.3f} in {vision.seconds:.0f} s")
    projectors.append("vision")
else:
    print("the visual projector is not pretrained in this profile: the model builder provides it")

# %%
fig, ax = plt.subplots(figsize=(7, 3))
for name in projectors:
    curve = pd.read_csv(Path(out_dir) / name / "dvclive" / "plots" / "metrics" / "loss.tsv", sep="\t")
    ax.plot(curve["step"], curve["loss"], label=f"{name} projector")
ax.set_xlabel("step")
ax.set_ylabel("loss on the answer tokens")
ax.set_ylim(bottom=0)
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
fig.tight_layout()

# %% [markdown]
# ## Does the LLM now hear?
#
# With only the audio projector trained, ask the frozen LLM to transcribe speech it has never
# heard: the soundtracks of the held-out test clips (a voice says a code word while another sound
# plays), which no stage trains on. It hears if it names the word; with ten words, chance is 0.1.

# %%
import dataclasses
import json

import numpy as np

trained = for_inference(load_trained_model(params, foundation_dir, [Path(out_dir) / "audio" / "final"]))
speech_question = read_corpus_split(data_dir, "speech_to_text")[0].question  # the question stage 2 trained on
qa_file = Path(data_dir) / "benchmarks" / "audio_aware" / "qa.json"
if qa_file.is_file():  # the synthetic corpus: its test clips that have a soundtrack
    held_out = [e for e in read_qa_benchmark(qa_file, Path(data_dir) / "clips") if e.kind == "word"]
    probe, items = [], []
    for example, item in zip(held_out, FeatureDataset(held_out, cache)):
        if item["audio_features"] is not None and len(probe) < 200:
            probe.append(dataclasses.replace(example, question=speech_question))
            items.append(dict(item, question=speech_question, answer=None))
    words = [e.answer.strip(".").strip('"').lower() for e in probe]
else:  # prepared real data has no held-out speech here: show training items, and say so
    probe = read_corpus_split(data_dir, "speech_to_text")[-8:]
    items = [dict(i, answer=None) for i in FeatureDataset(probe, cache)]
    words = None
answers = trained.answer(items, batch_size=params.evaluate.batch_size, max_new_tokens=16)
if words is not None:
    heard = np.array([w in a.lower().replace('"', " ").split() for w, a in zip(words, answers)])
    chance = 1 / len(set(words))
    print(f"held-out test clips: the spoken word is in the transcription {heard.mean():.1%} of the time "
          f"({heard.sum()} of {len(heard)}; chance {chance:.0%})")
    for word, answer, ok in list(zip(words, answers, heard))[:6]:
        print(f"  said: {word!r:10} heard: {answer!r}{'' if ok else '   (missed)'}")
else:
    heard = None
    for example, answer in zip(probe, answers):
        print(f"said (a training item): {example.answer!r:32} heard: {answer!r}")

# %% [markdown]
# ## Summary
#
# Computed from this run:

# %%
from IPython.display import Markdown, display

audio_curve = pd.read_csv(Path(out_dir) / "audio" / "dvclive" / "plots" / "metrics" / "loss.tsv", sep="\t")
size = sum(p.numel() for p in trained.audio_projector.parameters())
lines = [f"* The audio projector alone ({size:,} parameters; everything else frozen) took the loss on the answer tokens "
         f"from {audio_curve['loss'].iloc[0]:.2f} to {audio_curve['loss'].iloc[-1]:.2f} in {params.pretrain.audio.steps} steps."]
if heard is not None:
    verdict = "hears" if heard.mean() > 2 * chance else "does not yet hear reliably"
    lines.append(f"* Through it the frozen LLM {verdict}: on {len(heard)} held-out clips it names the spoken word "
                 f"{heard.mean():.1%} of the time, against {chance:.0%} by chance. The LLM never trained; only the projector did.")
lines.append("* Each stage saves only what it trained (`parts.json` lists it); the next stage loads those files by path.")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Exercises
#
# Each takes a few minutes on a laptop. `dvc repro -s pretrain` reruns this stage alone (about a
# minute in the tiny profile); `git checkout params.yaml && dvc checkout` puts everything back.
#
# 1. Set `model.projector: linear` and rerun this stage. Is the audio loss after the same steps
#    higher or lower, and does the LLM still name the word on held-out clips?
# 2. Halve `pretrain.audio.steps` and rerun this stage. Where on the loss curve above does it stop,
#    and how much of the held-out word accuracy is left?
# 3. Without rerunning anything: print the token layout (as in the cell above) of an image-caption
#    example (`read_corpus_split(data_dir, "image_captions")`). How many video slots does one image
#    get, and why that many?
