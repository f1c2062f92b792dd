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
# # 1. The encoders: foundation models and the feature cache
#
# **Goal.** An audio-visual LLM is built from models that already know something: Whisper has
# learned to hear speech, SigLIP to see, phi-2 to write. The study freezes all three and trains
# only small connectors between them. This notebook sets up those frozen parts:
#
# * **paper profile**: load Whisper small, SigLIP so400m and phi-2, check their shapes;
# * **tiny and smoke profiles**: *train* miniature versions with the same classes on the synthetic
#   corpus, and measure that they learned something, so the later stages run the paper's recipe on
#   encoders that mean something;
# * run every clip through the frozen encoders **once** and cache the features.

# %% tags=["parameters"]
params_file = "params.yaml"  # the study's parameters (one source of truth)
data_dir = "data"  # the corpus: `python -m avlib.synth --out data`, or `dvc pull`
foundation_dir = "checkpoints/foundation"  # where the foundation models go
features_dir = "features"  # the feature cache
metrics_file = "metrics/foundation.json"  # what each miniature model learned

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from avlib.config import load_params
from avlib.foundation import build_foundation, check_paper_models, load_foundation_model, require_corpus
from avlib.runtime import configure as configure_runtime, describe as computed_with, for_inference

params = load_params(params_file)
configure_runtime(params.runtime)  # the same CPU arithmetic on every Intel CPU (avlib/runtime.py says where not)
print(f"profile: {params.profile}, builder: {params.model.builder}")
print("computing with:", computed_with())  # the CPU and the kernels: runs on the same settings give the same bits

# %% [markdown]
# ## A look at the data
#
# Every clip is a real mp4: a shape moves across the frame while a voice says a code word and a
# sound plays. What is *said* cannot be seen; which way the shape *moves* cannot be heard.
# `avlib.media.load_clip` decodes only what the model uses: a few frames, from the middle of equal
# segments, and the audio resampled to 16 kHz.

# %%
from avlib.audio_encoder import first_window, log_mel
from avlib.datasets import read_corpus_split
from avlib.media import load_clip

root = require_corpus(data_dir, params.corpus)
example = next(e for e in read_corpus_split(root, "video_instructions_train") if e.needs != "visual")
clip = load_clip(example.media, num_frames=params.model.vision.num_frames)
print(example.media.name, "|", example.question, "->", example.answer)
print("frames", clip.frames.shape, "audio", None if clip.audio is None else clip.audio.shape, "seconds", clip.duration)

fig, axes = plt.subplots(2, 1, figsize=(10, 4.5))
axes[0].imshow(np.concatenate(list(clip.frames), axis=1))
axes[0].set_title("the sampled frames")
axes[0].axis("off")
mel = log_mel(first_window(clip.audio, params.model.audio.window_seconds)[None], params.model.audio.n_mels)[0]  # silence if no track
axes[1].imshow(mel, origin="lower", aspect="auto", cmap="magma")
axes[1].set_title("the first audio window as Whisper hears it (log-mel)")
axes[1].set_xlabel("10 ms frames")
axes[1].set_ylabel("mel bin")
fig.tight_layout()

# %% [markdown]
# ## The foundation models
#
# For the tiny profiles this trains, in order: a byte-level BPE tokenizer; a miniature Whisper on
# speech-to-text and sound captions (with auxiliary classifiers that make its encoder keep the
# spoken word in every frame); a miniature SigLIP with the sigmoid loss on frame-caption pairs; and
# a miniature Phi on the corpus text. Each is saved in its library's own format.

# %%
if params.model.builder == "paper":
    manifest = check_paper_models(params, foundation_dir)
else:
    manifest = build_foundation(params, data_dir, foundation_dir)

# %% [markdown]
# ## What they learned, against chance

# %%
from avlib.recipes import FRAME_HEADS

scores = manifest.get("scores", {})
if scores:
    rows = [
        ("Whisper", "spoken word accuracy", scores["whisper"]["word_accuracy"], scores["whisper"]["chance_word_accuracy"]),
        ("Whisper", "word error rate (lower is better)", scores["whisper"]["wer"], 1.0),
        ("SigLIP", "image->text recall@1", scores["siglip"]["recall_at_1"], scores["siglip"]["chance_recall_at_1"]),
        ("Phi", "perplexity (lower is better)", scores["phi"]["perplexity"], scores["phi"]["chance_perplexity"]),
    ]
    # What the training-only heads read off the mean of one frame's patch tokens: a temporal token's content
    rows[3:3] = [("SigLIP", f"frame mean -> {head}", accuracy, 1 / FRAME_HEADS[head])
                 for head, accuracy in scores["siglip"].get("frame_heads", {}).items()]
    for model, metric, value, chance in rows:
        print(f"{model:8s} {metric:36s} {value:8.3f}   chance: {chance:.3f}")
    for example in scores["whisper"]["examples"][:3]:
        print("heard:", example["hypothesis"], "| said:", example["reference"])
Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
flat = {f"{m}.{k}": v for m, values in scores.items() for k, v in values.items() if isinstance(v, (int, float))}
flat |= {f"siglip.frame_heads.{head}": v for head, v in scores.get("siglip", {}).get("frame_heads", {}).items()}
Path(metrics_file).write_text(json.dumps(flat or manifest.get("shapes", {}), indent=1) + "\n")
print(f"metrics written to {metrics_file}")

# %% [markdown]
# ## The frozen AVLM and the feature cache
#
# The encoders never train again, so each clip goes through them once. The cache key hashes the
# encoders' weights and every preprocessing parameter: change either and the old features are
# never read. Audio becomes `num_audio_tokens` per window; video becomes T + P tokens (a mean over
# patches per frame, then a mean over frames per patch).

# %%
from avlib.features import corpus_media, extract
from avlib.stages import open_cache

model = load_foundation_model(params, foundation_dir)
cache = open_cache(params, model, data_dir, features_dir)  # keyed by the weights as stored
model = for_inference(model)  # on a GPU, if there is one, in bf16
encoded = extract(model, corpus_media(data_dir), cache)  # only what is not cached yet
print(f"{encoded} media files encoded now")
summary = cache.summary()
print(json.dumps(summary, indent=1))

# %%
entry = next(e for e in cache.entries().values() if e["video"] and e["audio"])
video_features, audio_features = cache.load(entry)
print(entry["media"], {"video_features": tuple(video_features.shape), "audio_features": tuple(audio_features.shape)})

# %% [markdown]
# ## The pooling: from T x P patch features to T + P tokens
#
# SigLIP turns each of the T frames into P patch features (D wide). Feeding all T x P to the LLM
# would cost T x P tokens; Video-ChatGPT's pooling, which the paper keeps, makes T + P of them
# with two means:

# %%
from avlib.vision_encoder import VisionEncoder

encoder = model.vision_encoder
with torch.no_grad():
    tokens = encoder.patch_tokens(encoder.preprocess(clip.frames).to(encoder.mean.device)).float().cpu()  # (T, P, D)
    temporal = tokens.mean(dim=1)  # (T, D): one token per frame; *where* things are is averaged away
    spatial = tokens.mean(dim=0)  # (P, D): one token per patch position; *when* things happened is averaged away
pooled = torch.cat([temporal, spatial])  # (T + P, D): what the cache stores and the LLM receives
print("patch features", tuple(tokens.shape), "-> temporal", tuple(temporal.shape), "+ spatial", tuple(spatial.shape),
      "=", tuple(pooled.shape))
assert torch.equal(pooled, VisionEncoder.pool(tokens))

# %% [markdown]
# What survives? Play the clip backwards: the spatial tokens do not change beyond float rounding (a
# mean does not know the order it was taken in), and the temporal tokens come in the reverse order. The direction
# of motion survives only in the order of the T per-frame means, each of which has averaged the
# shape's position over the whole frame: it is there only as far as the patch features themselves
# encode where they are. The shape is blurred the other way: the spatial tokens see it smeared along
# its path, as the mean frame below does in pixels.

# %%
backwards = tokens.flip(0)
print("spatial tokens, clip played backwards: largest change", f"{(backwards.mean(dim=0) - spatial).abs().max().item():.1e}")
print("temporal tokens, clip played backwards: the same tokens reversed:",
      torch.allclose(backwards.mean(dim=1), temporal.flip(0)))
side = round(encoder.num_patches ** 0.5)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), gridspec_kw={"width_ratios": [3, 1, 1]})
axes[0].imshow(np.concatenate(list(clip.frames), axis=1))
axes[0].set_title(f"the {len(clip.frames)} frames: one temporal token each", fontsize=10)
axes[1].imshow(clip.frames.astype(np.float32).mean(axis=0).astype(np.uint8))
axes[1].set_title("the mean frame\n(in pixels)", fontsize=10)
distance = (spatial - spatial.mean(dim=0)).norm(dim=-1).reshape(side, side)
image = axes[2].imshow(distance, cmap="viridis")
axes[2].set_title("spatial tokens: distance\nfrom their mean, per patch", fontsize=10)
fig.colorbar(image, ax=axes[2], fraction=0.046)
for ax in axes:
    ax.axis("off")
fig.tight_layout()

# %% [markdown]
# ## Summary
#
# Computed from this run:

# %%
from IPython.display import Markdown, display

lines = []
if scores:
    lines.append(f"* The miniature Whisper names the spoken word of held-out clips {scores['whisper']['word_accuracy']:.0%} of the "
                 f"time (chance {scores['whisper']['chance_word_accuracy']:.0%}); the miniature SigLIP picks a held-out frame's caption "
                 f"{scores['siglip']['recall_at_1']:.0%} of the time (chance {scores['siglip']['chance_recall_at_1']:.1%}); the miniature "
                 f"Phi's perplexity is {scores['phi']['perplexity']:.2f} (a uniform guess: {scores['phi']['chance_perplexity']:.0f}).")
else:
    lines.append("* The paper's encoders and LLM were checked and loaded, not trained: they are frozen from here on.")
lines.append(f"* {summary['items']:,} media files' pooled features are cached once, under a key that changes whenever the weights "
             f"or any preprocessing parameter change. A clip is {tuple(video_features.shape)} video features "
             f"(T = {len(clip.frames)} temporal + P = {encoder.num_patches} spatial) and {tuple(audio_features.shape)} audio "
             f"features ({params.model.audio.num_audio_tokens} per {params.model.audio.window_seconds:g} s window).")
lines.append("* The pooling keeps *when* or *where*, never both: played backwards, a clip's spatial tokens do not change (beyond float rounding).")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Exercises
#
# Each takes a few minutes on a laptop, from this stage's outputs; none retrains anything.
#
# 1. Plot the cached video features of one clip as an image (tokens x width, `cache.load(entry)`).
#    Where do the T temporal tokens end and the P spatial ones begin, and why do the two parts look
#    different?
# 2. Repeat the pooling cell for a clip whose shape moves left and one whose shape moves right
#    (`example.answer` of a direction question says which). Compare their temporal tokens: which
#    differences could tell the LLM the direction?
# 3. Set `model.audio.num_audio_tokens` to 8 in `params.yaml` and run `dvc status` (not `dvc repro`).
#    Which stages would rerun, and why would the feature cache get a new folder? Then
#    `git checkout params.yaml`.
