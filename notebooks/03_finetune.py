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
# # 3. Joint finetuning, and its vision-only twin
#
# **Goal.** Train the model to answer questions about videos using both what it sees and what it
# hears: both projectors and LoRA adapters on the LLM learn from video instructions. The same
# notebook runs twice, once per `variant`:
#
# * `av`: the audio-visual model;
# * `vision_only`: the twin with the audio switch off. Same code path, same seed, same data order,
#   same steps: the two runs differ in nothing but the audio tokens.

# %% tags=["parameters"]
params_file = "params.yaml"  # the study's parameters
variant = "av"  # av | vision_only
data_dir = "data"  # the corpus
foundation_dir = "checkpoints/foundation"  # stage 1's models
features_dir = "features"  # stage 1's feature cache
pretrain_dir = "runs/pretrain"  # stage 2's projectors
out_dir = "runs/finetune"  # <variant>/ lands here
checkpoints_dir = "checkpoints/training"  # resumable training state: outside DVC's outputs, so a rerun resumes
launch = ""  # "": train in this kernel; an accelerate config (configs/accelerate/ddp.yaml): launch processes

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from avlib.config import load_params
from avlib.features import FeatureDataset
from avlib.runtime import configure as configure_runtime, for_inference
from avlib.stages import launch_command, load_trained_model, open_cache, pretrained_parts, run_stage, stage_examples

if variant not in ("av", "vision_only"):
    raise ValueError(f"variant must be 'av' or 'vision_only', got {variant!r}")
params = load_params(params_file)
configure_runtime(params.runtime)  # the same CPU arithmetic on every machine (avlib/runtime.py)
use_audio = variant == "av"
pretrained = pretrained_parts(params, pretrain_dir)  # what stage 2 trained

# %% [markdown]
# ## The training data
#
# Video instructions: several questions per clip, each labelled with what it needs. Clips without
# an audio track train with video only, in both variants.

# %%
examples = stage_examples(data_dir, "finetune", params)
frame = pd.DataFrame([{"needs": str(e.needs), "kind": e.kind} for e in examples])  # real data: needs unknown (None)
print(len(examples), "examples")
print(frame.groupby(["needs", "kind"]).size().unstack(0).fillna(0).astype(int))

# %% [markdown]
# ## One prompt, as each variant sees it

# %%
model = load_trained_model(params, foundation_dir, pretrained, use_audio=use_audio)
cache = open_cache(params, model, data_dir, features_dir)
item = FeatureDataset(examples[:1], cache)[0]
batch = model.collate([item])
ids = batch["input_ids"][0].tolist()
print(f"{variant}: {len(ids)} tokens = {ids.count(model.video_token_id)} video slots + "
      f"{ids.count(model.audio_token_id)} audio slots + {len(ids) - ids.count(model.video_token_id) - ids.count(model.audio_token_id)} text")

# %% [markdown]
# ## What trains

# %%
model.configure_training("finetune", params.finetune.lora)
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
total = sum(p.numel() for p in model.parameters())
print(f"trainable: {trainable:,} of {total:,} parameters ({100 * trainable / total:.1f} %): {model.trained_parts()}")
del model

# %% [markdown]
# ## Train
#
#
# In this kernel by default. With `launch` set to an accelerate configuration, the same function
# runs as separate processes (one per GPU); this notebook waits for them and stays the record.

# %%
if launch:
    import subprocess

    command = launch_command(launch, "finetune", variant, params_file, data_dir, foundation_dir, features_dir,
                             Path(out_dir) / variant, pretrained, Path(checkpoints_dir) / f"finetune_{variant}")
    print(" ".join(command))
    subprocess.run(command, check=True)
else:
    result = run_stage(params, "finetune", data_dir, foundation_dir, features_dir, Path(out_dir) / variant,
                       use_audio=use_audio, init_from=pretrained, checkpoint_dir=Path(checkpoints_dir) / f"finetune_{variant}")
    print(f"{variant}: final loss {result.final_loss:.3f}, {result.samples_per_second:.0f} samples/s, {result.seconds:.0f} s")

# %%
curve = pd.read_csv(Path(out_dir) / variant / "dvclive" / "plots" / "metrics" / "loss.tsv", sep="\t")
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(curve["step"], curve["loss"])
ax.set_xlabel("step")
ax.set_ylabel("loss")
ax.set_yscale("log")
ax.set_title(f"joint finetuning ({variant})")
fig.tight_layout()

# %% [markdown]
# ## A few answers on validation clips

# %%
from avlib.datasets import read_corpus_split

tuned = load_trained_model(params, foundation_dir, [*pretrained, Path(out_dir) / variant / "final"], use_audio=use_audio)
val = read_corpus_split(data_dir, "video_instructions_val")[:8]
items = [dict(i, answer=None) for i in FeatureDataset(val, cache)]
answers = for_inference(tuned).answer(items, max_new_tokens=32)
for example, answer in zip(val, answers):
    print(f"[{str(example.needs):12}] {example.question}\n    reference: {example.answer}\n    {variant}: {answer}")

# %% [markdown]
# ## Summary
#
# * Joint finetuning trains both projectors and LoRA adapters; the LLM's own weights stay frozen.
# * The vision-only twin runs the very same function with `use_audio=False`: no `<audio>` line in
#   any prompt, exactly as for a clip without a soundtrack.
#
# ## Exercises
#
# 1. Compare the two variants' loss curves with `dvc plots show`. Where do they part, and why?
# 2. Set `finetune.lora.rank` to 4 and to 64. Which questions suffer first?
# 3. Kill a run half-way (Ctrl-C) and start it again: it resumes from `checkpoints/training/`. Check that
#    the final weights match an uninterrupted run (see `tests/test_train.py`).
