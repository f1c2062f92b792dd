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
configure_runtime(params.runtime)  # the same CPU arithmetic on every Intel CPU (avlib/runtime.py says where not)
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
# ## One forward pass, step by step
#
# `AVLM.forward` is four steps. Here they are on the first training example, with the shapes at
# every step; the last cell checks that the result is exactly what the library computes.
#
# 1. The prompt is tokenised with one placeholder token per video feature (`<video>`) and per audio
#    feature (`<audio>`); the answer follows, and the labels mark which tokens the loss sees.
# 2. Every token is embedded by the LLM's own table (the placeholders as token 0, to be overwritten).
# 3. The projectors map the encoders' features to the LLM's width.
# 4. `masked_scatter` writes the projected features into the placeholders' rows, in order.

# %%
import torch

from avlib.template import IGNORE_INDEX

model = load_trained_model(params, foundation_dir, pretrained, use_audio=use_audio)
cache = open_cache(params, model, data_dir, features_dir)
item = FeatureDataset(examples[:1], cache)[0]
print("question:", item["question"], "| answer:", item["answer"])
print("cached features: video", tuple(item["video_features"].shape),
      "audio", None if item["audio_features"] is None else tuple(item["audio_features"].shape))
batch = model.collate([item])
ids, labels = batch["input_ids"], batch["labels"]  # (B, L): B = 1 here
print("1. token ids", tuple(ids.shape), "| labels", tuple(labels.shape),
      f"| {int((labels != IGNORE_INDEX).sum())} supervised tokens:", repr(model.tokenizer.decode(ids[labels != IGNORE_INDEX])))

# %%
video_slots = ids == model.video_token_id  # (B, L) True where a video feature goes
audio_slots = ids == model.audio_token_id
with torch.no_grad():
    embeds = model.llm.get_input_embeddings()(ids.masked_fill(video_slots | audio_slots, 0))
    print("2. embeddings", tuple(embeds.shape), f"| {int(video_slots.sum())} video and {int(audio_slots.sum())} audio slots")
    video = model.vision_projector(batch["video_features"][0])  # (T + P, Dv) -> (T + P, E)
    print("3. video features", tuple(batch["video_features"][0].shape), "-> projected", tuple(video.shape))
    spliced = embeds.masked_scatter(video_slots.unsqueeze(-1), video)  # row k of `video` -> the k-th video slot
    if audio_slots.any():  # the twin's prompt has no audio slots: nothing to write
        audio = model.audio_projector(batch["audio_features"][0])  # (W * tokens per window, Da) -> (.., E)
        print("3. audio features", tuple(batch["audio_features"][0].shape), "-> projected", tuple(audio.shape))
        spliced = spliced.masked_scatter(audio_slots.unsqueeze(-1), audio)
    print("4. spliced input", tuple(spliced.shape))
    same = torch.equal(spliced, model.embed(ids, batch["video_features"], batch["audio_features"]))
    print("identical to AVLM.embed:", same)
    assert same
    loss = model.llm(inputs_embeds=spliced, attention_mask=batch["attention_mask"], labels=labels).loss
print(f"the LLM's loss on the answer tokens before finetuning: {loss.item():.3f}")

# %% [markdown]
# ## The same example, as the audio-visual model and its twin see it
#
# The twin's prompt is the AV model's without its `<audio>` line: the same video slots, the same
# text, the same answer.

# %%
from matplotlib.colors import ListedColormap

PARTS = {"text (prompt)": "#dddddd", "video slot": "#2a7ab0", "audio slot": "#d1495b", "answer (in the loss)": "#66a61e"}
layouts = {}
for name, hears in (("audio-visual", True), ("vision-only twin", False)):
    model.use_audio = hears  # the one switch between the two
    b = model.collate([item])
    row = torch.zeros(b["input_ids"].shape[1], dtype=torch.long)
    row[b["input_ids"][0] == model.video_token_id] = 1
    row[b["input_ids"][0] == model.audio_token_id] = 2
    row[b["labels"][0] != IGNORE_INDEX] = 3
    layouts[name] = row
model.use_audio = use_audio
width = max(len(r) for r in layouts.values())
fig, axes = plt.subplots(2, 1, figsize=(10, 2.2), sharex=True)
for ax, (name, row) in zip(axes, layouts.items()):
    ax.imshow(row[None].numpy(), cmap=ListedColormap(list(PARTS.values())), vmin=0, vmax=3, aspect="auto", interpolation="nearest")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_yticks([])
    ax.set_ylabel(name, rotation=0, ha="right", va="center")
axes[-1].set_xlabel("position in the LLM's input")
fig.legend([plt.Rectangle((0, 0), 1, 1, color=c) for c in PARTS.values()], list(PARTS), loc="center left",
           bbox_to_anchor=(1.0, 0.5), frameon=False)
fig.tight_layout()
for name, row in layouts.items():
    print(f"{name}: {len(row)} tokens = " + ", ".join(f"{int((row == k).sum())} {part}" for k, part in enumerate(PARTS)))

# %% [markdown]
# ## What trains: LoRA
#
# LoRA leaves each adapted weight matrix W (d_out x d_in) frozen and learns a low-rank change
# beside it: W x + (alpha / r) B A x, with A (r x d_in) and B (d_out x r); B starts at zero, so
# training starts from the pretrained model exactly. Only A and B, and both projectors, train.

# %%
lora = params.finetune.lora
model.configure_training("finetune", lora)
adapted = sorted({name.split(".lora_A")[0] for name, _ in model.llm.named_parameters() if ".lora_A" in name})
print(f"rank r = {lora.rank}, alpha = {lora.alpha}: the update is scaled by alpha / r = {lora.alpha / lora.rank:g}; "
      f"dropout {lora.dropout} on its input")
print(f"target modules {list(lora.target_modules)}: {len(adapted)} adapted linear layers, e.g. {adapted[0]}")
weights = dict(model.llm.named_parameters())
print("  A", tuple(weights[adapted[0] + ".lora_A.default.weight"].shape), "B", tuple(weights[adapted[0] + ".lora_B.default.weight"].shape),
      "beside the frozen W", tuple(weights[adapted[0] + ".base_layer.weight"].shape))
counts = {}
for name, p in model.named_parameters():
    part = "LLM: LoRA A and B" if "lora_" in name else ("LLM: frozen weights" if name.startswith("llm.") else name.split(".")[0])
    counts.setdefault(part, [0, 0])[p.requires_grad] += p.numel()
table = pd.DataFrame(counts, index=["frozen", "trainable"]).T
print(table)
trainable, total = int(table["trainable"].sum()), int(table.values.sum())
print(f"trainable: {trainable:,} of {total:,} parameters ({100 * trainable / total:.1f} %): {model.trained_parts()}")

# %% [markdown]
# ## What one step computes
#
# A step draws `finetune.batch_size` examples. Their prompts differ in length (a clip may have no
# soundtrack, or two windows of it; a description is longer than a word), and a batch is a
# rectangle: every row is padded to the longest. Two things the training loop does change no
# gradient, only how much is computed:
#
# * **Length groups** (`finetune.length_groups`): the rows run in that many passes of like length,
#   each padded only to its own longest row (`avlib.template.split_by_length`). The passes' summed
#   losses are the batch's, and so are their gradients.
# * **The shared prefix**: every row begins with the same system prompt. `AVLM.forward` computes it
#   once, as a batch of one, and every row attends to that one copy (`AVLM.shared_prefix`; not
#   where the LLM has dropout, which would draw each row its own masks).
#
# Here is the first step's batch, counted in positions the LLM computes:

# %%
from avlib.template import split_by_length
from avlib.train import batch_indices

dataset = FeatureDataset(examples, cache)
step_batch = model.collate([dataset[i] for i in batch_indices(len(dataset), params.finetune.batch_size, 0, params.seed)])
rows, width = step_batch["input_ids"].shape
tokens = int(step_batch["attention_mask"].sum())
computed = {"one pass, padded to the longest row": rows * width}
groups = split_by_length(step_batch, params.finetune.length_groups)
computed[f"{len(groups)} length groups"] = sum(g["input_ids"].numel() for g in groups)
with torch.no_grad():
    shared = [model.shared_prefix(model.embed(g["input_ids"], g["video_features"], g["audio_features"]), g["attention_mask"])
              for g in groups]
computed["the same, the shared prefix computed once"] = sum(g["input_ids"].numel() - (len(g["input_ids"]) - 1) * n
                                                            for g, n in zip(groups, shared))
print(f"{rows} rows of {tokens / rows:.0f} tokens on average, the longest {width}; a shared prefix of {shared[0]} positions: "
      + repr(model.tokenizer.decode(step_batch["input_ids"][0, : shared[0]])))
for how, positions in computed.items():
    print(f"  {how:45s} {positions:6,} positions ({positions / tokens:.2f} per token of the batch)")
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
ax.set_ylabel("loss on the answer tokens")
ax.set_ylim(bottom=0)
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
# Computed from this run:

# %%
from IPython.display import Markdown, display

from avlib.scoring import is_correct

right = sum(is_correct(answer, example.answer, example.kind) for example, answer in zip(val, answers))
slots = {name: int((row == 2).sum()) for name, row in layouts.items()}
display(Markdown("\n".join([
    f"* Only {trainable:,} of {total:,} parameters trained ({100 * trainable / total:.1f} %): both projectors and rank-{lora.rank} "
    f"LoRA adapters on {len(adapted)} linear layers of the LLM; the LLM's own weights stayed frozen.",
    f"* The loss on the answer tokens went from {curve['loss'].iloc[0]:.2f} to {curve['loss'].iloc[-1]:.2f} in {params.finetune.steps} steps; "
    f"{right} of the {len(val)} validation answers above state the reference's facts.",
    f"* The {variant} run: the example's prompt had {slots['audio-visual']} audio slots as the audio-visual model sees it and "
    f"{slots['vision-only twin']} as the twin does; everything else (video slots, text, answer, seed, data order, steps) is shared.",
])))

# %% [markdown]
# ## Exercises
#
# Each takes a few minutes on a laptop. `dvc repro -s finetune@av` (or `finetune@vision_only`)
# reruns one variant alone (2-3 minutes in the tiny profile); `git checkout params.yaml && dvc checkout`
# puts everything back.
#
# 1. Without rerunning anything: `dvc plots show` draws both variants' loss curves. Where do they
#    part, and which questions (look at the training data's kinds) can only the AV model's loss
#    go down on?
# 2. Set `finetune.lora.rank` to 2 and rerun `finetune@av`. How do the trainable counts above and
#    the final loss change?
# 3. Start `dvc repro -s finetune@av` after changing `finetune.warmup`, press Ctrl-C half-way, and
#    run it again: the notebook prints where it resumed from `checkpoints/training/`. The final
#    weights equal an uninterrupted run's (`tests/test_pipeline.py` checks exactly this).
