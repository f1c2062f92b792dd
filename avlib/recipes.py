"""The miniature foundation models' recipes: how the tiny profiles train their Whisper, SigLIP and Phi.

Each recipe trains one model of the paper's classes on the synthetic corpus and
scores it on held-out data beside its chance level (avlib.foundation runs them
in stage 1 and saves the results):

    Whisper     encoder + decoder on speech-to-text and sound captions  (openai-whisper)
    SigLIP      image + text towers with the sigmoid loss on frames     (open_clip)
    Phi         causal LM on the corpus text                            (transformers)

Two lessons from the feasibility probe (docs/design.md, section 4) shape the
Whisper recipe: the decoder's positional table is created uninitialised
(`torch.empty`) and must be initialised, and auxiliary classifiers on the
encoder's pooled output (spoken word, sound, beep count, order) make the
encoder carry those facts in every frame, which survives the pooling to a few
tokens that the AVLM applies.

The SigLIP recipe does the same for what the video pooling keeps: classifiers on
the per-frame mean of the feature block's patch tokens (shape, colour,
background, where the shape is) and one per patch (which shape, if any, covers
it). Trained on the contrastive loss alone, the trunk left the shape and its
place to the final pooling head, which the AVLM prunes: the direction of motion
could not be read from the frames' tokens.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import whisper
from open_clip.loss import SigLipLoss
from torch import nn
from transformers import PhiForCausalLM

from avlib import synth
from avlib.audio_encoder import first_window, log_mel
from avlib.builders import audio_ctx, build_tiny_siglip, tiny_phi_config, tiny_siglip_config
from avlib.config import ModelConfig, Params
from avlib.datasets import DataError, load_media, read_corpus_split
from avlib.media import load_clip
from avlib.model import SIGLIP_PREPROCESS
from avlib.progress import progress_bar
from avlib.template import END_OF_TURN, SYSTEM
from avlib.train import lr_factor, seed_everything
from avlib.vision_encoder import preprocess_frames


def fit(module: nn.Module, cfg, seed: int, num_items: int, loss_of, desc: str, weight_decay: float) -> None:
    """The loop the miniature models share: random batches, AdamW, warm-up then cosine, clipping at 1.

    loss_of(index) -> (loss, {name: value to show}) for a batch of item indices.
    """
    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.steps, cfg.warmup))
    generator = torch.Generator().manual_seed(seed)
    module.train()
    bar = progress_bar(range(cfg.steps), desc=desc)
    for step in bar:
        index = torch.randint(num_items, (cfg.batch_size,), generator=generator)
        loss, shown = loss_of(index)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 20 == 0:
            bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()})
    module.eval()


# ------------------------------------------------------------------- the text


def chat_text(question: str, answer: str) -> str:
    """One exchange in the chat template, without media: what the LLM will later read around the media."""
    return f"{SYSTEM} USER: {question} ASSISTANT: {answer}{END_OF_TURN}"


def corpus_texts(root: Path, split: str = "train") -> list[str]:
    """The corpus text the tokenizer and the LLM learn from: QA in the chat template, transcripts, captions."""
    if split == "train":  # prepared real data has no image_captions split
        instructions = read_corpus_split(root, "video_instructions_train")
        extra = [e.answer for name in ("speech_to_text", "audio_captions", "image_captions")
                 if (root / "splits" / f"{name}.json").is_file() for e in read_corpus_split(root, name)]
    else:
        instructions, extra = read_corpus_split(root, "video_instructions_val"), []
    return [chat_text(e.question, e.answer) for e in instructions] + [t + END_OF_TURN for t in extra]


# ------------------------------------------------------------------- Whisper

AUX_HEADS = {"word": len(synth.WORDS) + 1, "sound": len(synth.SOUNDS) + 1, "beeps": 5, "order": 2}


def _audio_caption(facts: dict) -> str:
    sound = synth.Facts(**{**facts, "speech_span": None, "sound_span": None}).sound_phrase()
    said = f"a voice says {facts['word']}"
    return f"{said}, then {sound}" if facts["speech_first"] else f"{sound}, then {said}"


def audio_examples(root: Path, window_seconds: float, split: str) -> list[dict]:
    """Audio windows with a text target and auxiliary labels.

    train: the speech-to-text and audio-caption files plus the audio of the
    training clips (one window each); test: the audio of the test clips.
    """
    items = []
    window = round(window_seconds * synth.RATE)

    def labels(word=None, sound=None, beeps=0, speech_first=None):
        return {
            "word": synth.WORDS.index(word) if word else len(synth.WORDS),
            "sound": synth.SOUNDS.index(sound) if sound else len(synth.SOUNDS),
            "beeps": beeps,
            "order": -100 if speech_first is None else int(speech_first),
        }

    if split == "train":
        for r in json.loads((root / "splits" / "speech_to_text.json").read_text()):
            items.append({"media": root / r["media"], "text": r["text"], **labels(word=r["word"])})
        for r in json.loads((root / "splits" / "audio_captions.json").read_text()):
            items.append({"media": root / r["media"], "text": r["caption"], **labels(r["word"], r["sound"], r["beeps"])})
    clips = [f for f in json.loads((root / "clips.json").read_text()) if f["name"].startswith(split) and f["has_audio"]]
    for f in clips:
        if f["duration"] * synth.RATE > window:
            continue  # long clips: their speech straddles two windows
        items.append({"media": root / "clips" / f"{f['name']}.mp4", "text": _audio_caption(f),
                      **labels(f["word"], f["sound"], f["beeps"], f["speech_first"])})
    return items


def _mels(items: list[dict], window_seconds: float, n_mels: int, desc: str) -> torch.Tensor:
    """(N, M, F) log-mel of the first window of each item's audio."""
    out = [first_window(load_clip(item["media"], num_frames=0, max_audio_seconds=window_seconds).audio, window_seconds)
           for item in progress_bar(items, desc=desc, leave=False)]
    mels = []
    for start in range(0, len(out), 256):
        mels.append(log_mel(torch.stack(out[start : start + 256]), n_mels))
    return torch.cat(mels)


class WhisperWithHeads(nn.Module):
    """A Whisper model and, for training only, classifiers on its mean-pooled encoder output."""

    def __init__(self, dims: whisper.model.ModelDimensions):
        super().__init__()
        self.whisper = whisper.model.Whisper(dims)
        nn.init.normal_(self.whisper.decoder.positional_embedding, std=0.02)  # created with torch.empty
        self.heads = nn.ModuleDict({name: nn.Linear(dims.n_audio_state, n) for name, n in AUX_HEADS.items()})

    def forward(self, mel: torch.Tensor, tokens: torch.Tensor):
        encoded = self.whisper.encoder(mel)  # (B, C, D)
        logits = self.whisper.decoder(tokens, encoded)  # (B, L, V)
        pooled = encoded.mean(dim=1)
        return logits, {name: head(pooled) for name, head in self.heads.items()}


def _text_batch(texts: list[str], tokenizer, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder inputs [EOT, t1..tn] and targets [t1..tn, EOT], padded with -100 in the targets."""
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    ids = [tokenizer.encode(t, add_special_tokens=False)[: max_len - 1] for t in texts]
    length = max(len(i) for i in ids) + 1
    inputs = torch.full((len(ids), length), eot, dtype=torch.long)
    targets = torch.full((len(ids), length), -100, dtype=torch.long)
    for row, seq in enumerate(ids):
        inputs[row, 1 : len(seq) + 1] = torch.tensor(seq, dtype=torch.long)
        targets[row, : len(seq) + 1] = torch.tensor(seq + [eot], dtype=torch.long)
    return inputs, targets


def whisper_dims(model: ModelConfig, vocab: int) -> whisper.model.ModelDimensions:
    t = model.tiny
    return whisper.model.ModelDimensions(
        n_mels=model.audio.n_mels, n_audio_ctx=audio_ctx(model.audio.window_seconds), n_audio_state=t.audio_width,
        n_audio_head=t.audio_heads, n_audio_layer=t.audio_layers, n_vocab=vocab, n_text_ctx=t.whisper_text_ctx,
        n_text_state=t.text_width, n_text_head=t.text_heads, n_text_layer=t.text_layers,
    )


def train_whisper(root: Path, params: Params, tokenizer, log=print) -> tuple[whisper.model.Whisper, dict]:
    """Train a miniature Whisper; returns it and its held-out scores."""
    cfg, model_cfg = params.foundation.whisper, params.model
    seed_everything(params.seed)
    train = audio_examples(root, model_cfg.audio.window_seconds, "train")
    test = audio_examples(root, model_cfg.audio.window_seconds, "test")
    if not test:
        raise DataError(f"{root}: no test clip with audio fits one window; the Whisper cannot be scored")
    mels = _mels(train, model_cfg.audio.window_seconds, model_cfg.audio.n_mels, "whisper: train mels")
    test_mels = _mels(test, model_cfg.audio.window_seconds, model_cfg.audio.n_mels, "whisper: test mels")
    net = WhisperWithHeads(whisper_dims(model_cfg, len(tokenizer)))
    aux = {name: torch.tensor([item[name] for item in train]) for name in AUX_HEADS}

    def loss_of(index):
        inputs, targets = _text_batch([train[i]["text"] for i in index], tokenizer, model_cfg.tiny.whisper_text_ctx)
        logits, heads = net(mels[index], inputs)
        loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100)
        aux_loss = sum(F.cross_entropy(heads[n], aux[n][index], ignore_index=-100) for n in AUX_HEADS)
        return loss + cfg.aux_weight * aux_loss, {"text": loss.item(), "aux": aux_loss.item()}

    fit(net, cfg, params.seed, len(train), loss_of, "whisper", weight_decay=0.01)
    scores = evaluate_whisper(net.whisper, test_mels, [t["text"] for t in test], tokenizer, model_cfg.tiny.whisper_text_ctx)
    words = [t["word"] for t in test]
    scores["chance_word_accuracy"] = 1 / len(synth.WORDS)
    with torch.no_grad():
        predicted = torch.cat([net.heads["word"](net.whisper.encoder(test_mels[i : i + 128]).mean(1)).argmax(-1)
                               for i in range(0, len(test_mels), 128)])
    scores["probe_word_accuracy"] = float((predicted == torch.tensor(words)).float().mean())
    log(f"whisper: test WER {scores['wer']:.3f}, spoken word accuracy {scores['word_accuracy']:.3f} "
        f"(chance {scores['chance_word_accuracy']:.2f})")
    return net.whisper, scores


def edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


@torch.no_grad()
def transcribe(model: whisper.model.Whisper, mels: torch.Tensor, tokenizer, max_len: int) -> list[str]:
    """Greedy decoding with the miniature Whisper: mels (N, M, F) -> texts."""
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    texts = []
    for start in range(0, len(mels), 128):
        encoded = model.encoder(mels[start : start + 128])
        tokens = torch.full((len(encoded), 1), eot, dtype=torch.long)
        done = torch.zeros(len(encoded), dtype=torch.bool)
        for _ in range(max_len - 1):
            next_token = model.decoder(tokens, encoded)[:, -1].argmax(-1)
            next_token[done] = eot
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            done |= next_token == eot
            if done.all():
                break
        for row in tokens[:, 1:].tolist():
            texts.append(tokenizer.decode(row[: row.index(eot)] if eot in row else row).strip())
    return texts


def evaluate_whisper(model, mels, references: list[str], tokenizer, max_len: int) -> dict:
    hypotheses = transcribe(model, mels, tokenizer, max_len)
    errors = sum(edit_distance(h.split(), r.split()) for h, r in zip(hypotheses, references))
    total = sum(len(r.split()) for r in references)
    spoken = [next((w for w in synth.WORDS if w in r.split()), None) for r in references]
    hits = [w in h.split() for w, h in zip(spoken, hypotheses) if w]
    return {"wer": errors / max(total, 1), "word_accuracy": float(np.mean(hits)) if hits else 0.0,
            "examples": [{"reference": r, "hypothesis": h} for r, h in list(zip(references, hypotheses))[:5]]}


def save_whisper(model: whisper.model.Whisper, path: Path) -> None:
    """The openai-whisper checkpoint format: {"dims": ..., "model_state_dict": ...}."""
    torch.save({"dims": dataclasses.asdict(model.dims), "model_state_dict": model.state_dict()}, path)


# -------------------------------------------------------------------- SigLIP


PLACE_BINS = 4  # where the shape's centre is, across and down the frame, in quarters
FRAME_HEADS = {"shape": len(synth.SHAPES), "color": len(synth.COLORS), "background": len(synth.BACKGROUNDS),
               "column": PLACE_BINS, "row": PLACE_BINS}
COLOUR_HEADS = ("color", "background")


def _frame_labels(facts: synth.Facts, progress: float | None, size: int, patch: int) -> dict:
    """What the auxiliary heads learn to read off one frame (-100: unknown, not scored).

    "patches": per patch, 0 for background, 1 + the shape's index where the shape covers most of it.
    """
    grid = size // patch
    labels = {"shape": synth.SHAPES.index(facts.shape), "color": list(synth.COLORS).index(facts.color),
              "background": list(synth.BACKGROUNDS).index(facts.background), "column": -100, "row": -100,
              "patches": np.full(grid * grid, -100)}
    if progress is not None:
        x, y = facts.center(progress)
        labels["column"], labels["row"] = (min(int(v * PLACE_BINS), PLACE_BINS - 1) for v in (x, y))
        mask = np.zeros((size, size, 3), np.uint8)
        synth.draw_shape(mask, facts.shape, (1, 1, 1), x * size, y * size, facts.radius * size)
        cover = mask[..., 0].reshape(grid, patch, grid, patch).mean(axis=(1, 3)).reshape(-1)
        labels["patches"] = np.where(cover > 0.5, 1 + synth.SHAPES.index(facts.shape), 0)
    return labels


def frame_captions(root: Path, split: str, frames_per_clip: int, size: int, patch: int) -> tuple[torch.Tensor, list[str], dict]:
    """Frames (N, S, S, 3) uint8 of the split's clips with captions saying what is where; train adds the image split.

    Also returns the frames' labels for the auxiliary heads: {head: (N,) class ids}.
    """
    fields = {x.name for x in dataclasses.fields(synth.Facts)}
    clips = [f for f in json.loads((root / "clips.json").read_text()) if f["name"].startswith(split)]
    frames, captions, labels = [], [], []
    for f in progress_bar(clips, desc=f"siglip: {split} frames", leave=False):
        clip = load_clip(root / "clips" / f"{f['name']}.mp4", num_frames=frames_per_clip, frame_size=size, audio=False)
        facts = synth.Facts(**{k: v for k, v in f.items() if k in fields})
        count = round(f["duration"] * clip.fps)
        for image, shown_at in zip(clip.frames, clip.frame_times):
            at = synth.progress(round(shown_at * clip.fps), count)
            frames.append(image)
            captions.append(facts.scene(at))
            labels.append(_frame_labels(facts, at, size, patch))
    if split == "train":
        for r in json.loads((root / "splits" / "image_captions.json").read_text()):
            image, _ = load_media(root / r["media"], 1, size)
            frames.append(image[0])
            captions.append(r["caption"])
            facts = synth.Facts(r["id"], r["shape"], r["color"], r["background"], "left", 0.0, False)
            labels.append(_frame_labels(facts, None, size, patch))
    label_ids = {head: torch.tensor(np.stack([row[head] for row in labels])) for head in (*FRAME_HEADS, "patches")}
    return torch.from_numpy(np.stack(frames)), captions, label_ids


def _caption_ids(captions: list[str], tokenizer, context: int) -> torch.Tensor:
    """(N, context) token ids, end-of-text appended, padded with end-of-text (the tower pools the last position)."""
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    out = torch.full((len(captions), context), eot, dtype=torch.long)
    for row, caption in enumerate(captions):
        ids = tokenizer.encode(caption, add_special_tokens=False)[: context - 1] + [eot]
        out[row, : len(ids)] = torch.tensor(ids)
    return out


class FrameHeads(nn.Module):
    """For training only: classifiers on the mean over patches of one block's tokens (what a temporal token is).

    They make the trunk carry each frame's shape, colours and where the shape is
    in that mean, which Video-ChatGPT's pooling keeps (its per-frame tokens); the
    contrastive loss alone leaves shape and place mostly to the final pooling head.

    The heads share one mean (64 wide in the tiny profile), and the easy ones
    crowd out the shape: with every loss weighed 1 a frame's held-out shape was
    0.45; with the colour heads gone 0.55, and 0.82 with the shape weighed 3, but
    the finetuned models then read the background from the tokens 0.53-0.81 of
    the time (a linear probe still found it). Hence the weights: `shape_weight`
    for the shape's loss, `colour_weight` for the colour and background ones, 1
    for the place ones.
    """

    def __init__(self, trunk: nn.Module, layer: int, shape_weight: float = 1.0, colour_weight: float = 1.0):
        super().__init__()
        self.weights = {name: 1.0 for name in FRAME_HEADS} | dict.fromkeys(COLOUR_HEADS, colour_weight) | {"shape": shape_weight}
        self.heads = nn.ModuleDict({name: nn.Linear(trunk.embed_dim, n) for name, n in FRAME_HEADS.items()})
        self.patch_head = nn.Linear(trunk.embed_dim, 1 + len(synth.SHAPES))
        self.tokens = None
        self.hook = trunk.blocks[layer].register_forward_hook(lambda module, inputs, output: setattr(self, "tokens", output))

    @property
    def pooled(self) -> torch.Tensor:
        return self.tokens.mean(dim=1)

    def loss(self, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        pooled = self.pooled
        frame = sum(w * F.cross_entropy(self.heads[n](pooled), labels[n], ignore_index=-100) for n, w in self.weights.items())
        patches = F.cross_entropy(self.patch_head(self.tokens).flatten(0, 1), labels["patches"].flatten(), ignore_index=-100)
        return frame + patches

    @torch.no_grad()
    def accuracy(self, clip, pixels: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, float]:
        """Held-out accuracy of each head, over the frames whose label is known."""
        logits = {n: [] for n in FRAME_HEADS}
        for start in range(0, len(pixels), 256):
            clip.encode_image(pixels[start : start + 256])
            for n in FRAME_HEADS:
                logits[n].append(self.heads[n](self.pooled))
        out = {}
        for n in FRAME_HEADS:
            known = labels[n] != -100
            out[n] = float((torch.cat(logits[n]).argmax(-1)[known] == labels[n][known]).float().mean())
        return out


def train_siglip(root: Path, params: Params, tokenizer, log=print):
    """Train a miniature SigLIP with the sigmoid loss; returns (model, its open_clip config, scores)."""
    cfg, model_cfg = params.foundation.siglip, params.model
    seed_everything(params.seed)
    size = model_cfg.tiny.image_size
    patch = model_cfg.tiny.patch_size
    images, captions, labels = frame_captions(root, "train", cfg.frames_per_clip, size, patch)
    test_images, test_captions, test_labels = frame_captions(root, "test", 1, size, patch)
    context = tiny_siglip_config(model_cfg)["text_cfg"]["context_length"]
    texts, test_texts = _caption_ids(captions, tokenizer, context), _caption_ids(test_captions, tokenizer, context)
    clip = build_tiny_siglip(model_cfg)
    layer = model_cfg.vision.feature_layer % len(clip.visual.trunk.blocks)
    heads = FrameHeads(clip.visual.trunk, layer, cfg.shape_weight, cfg.colour_weight)
    mean, std = (torch.tensor(SIGLIP_PREPROCESS[k]).view(1, 3, 1, 1) for k in ("mean", "std"))

    def pixels(frames):
        return preprocess_frames(frames, (size, size), mean, std, SIGLIP_PREPROCESS["interpolation"])

    loss_fn = SigLipLoss()

    def loss_of(index):
        loss = loss_fn(*clip(pixels(images[index]), texts[index]))
        aux = heads.loss({n: v[index] for n, v in labels.items()})
        return loss + cfg.aux_weight * aux, {"loss": loss.item(), "aux": aux.item()}

    fit(nn.ModuleList([clip, heads]), cfg, params.seed, len(images), loss_of, "siglip", weight_decay=0.05)
    scores = evaluate_siglip(clip, pixels, test_images, test_captions, test_texts)
    scores["frame_heads"] = heads.accuracy(clip, pixels(test_images), test_labels)
    heads.hook.remove()
    log(f"siglip: test image->text recall@1 {scores['recall_at_1']:.3f} over {scores['candidates']} captions "
        f"(chance {scores['chance_recall_at_1']:.3f}); per-frame heads on block {layer}: "
        + ", ".join(f"{n} {a:.2f}" for n, a in scores["frame_heads"].items()))
    return clip, scores


@torch.no_grad()
def evaluate_siglip(clip, pixels, images, captions: list[str], texts: torch.Tensor) -> dict:
    """Image->text recall@1 among the distinct held-out captions."""
    unique = sorted(set(captions))
    first = {c: captions.index(c) for c in unique}
    text_features = F.normalize(clip.encode_text(texts[[first[c] for c in unique]]), dim=-1)
    image_features = F.normalize(torch.cat([clip.encode_image(pixels(images[i : i + 256]))
                                            for i in range(0, len(images), 256)]), dim=-1)
    best = (image_features @ text_features.T).argmax(-1)
    correct = [unique[b] == c for b, c in zip(best.tolist(), captions)]
    return {"recall_at_1": float(np.mean(correct)), "candidates": len(unique), "chance_recall_at_1": 1 / len(unique)}


# ----------------------------------------------------------------------- Phi


def _lm_blocks(texts: list[str], tokenizer, length: int) -> torch.Tensor:
    """Concatenate the token streams and cut them into (N, length) blocks."""
    stream = [i for t in texts for i in tokenizer.encode(t, add_special_tokens=False)]
    blocks = len(stream) // length
    return torch.tensor(stream[: blocks * length], dtype=torch.long).view(blocks, length)


def train_phi(root: Path, params: Params, tokenizer, log=print) -> tuple[PhiForCausalLM, dict]:
    cfg, model_cfg = params.foundation.phi, params.model
    seed_everything(params.seed)
    rng = np.random.default_rng(params.seed)
    train_texts = corpus_texts(root, "train")
    rng.shuffle(train_texts)
    train, val = _lm_blocks(train_texts, tokenizer, cfg.seq_len), _lm_blocks(corpus_texts(root, "val"), tokenizer, cfg.seq_len)
    model = PhiForCausalLM(tiny_phi_config(model_cfg, len(tokenizer)))

    def loss_of(index):
        loss = model(input_ids=train[index], labels=train[index]).loss
        return loss, {"loss": loss.item()}

    fit(model, cfg, params.seed, len(train), loss_of, "phi", weight_decay=0.01)
    with torch.no_grad():
        losses = [model(input_ids=val[i : i + 64], labels=val[i : i + 64]).loss.item() for i in range(0, len(val), 64)]
    perplexity = float(math.exp(np.mean(losses)))
    scores = {"perplexity": perplexity, "chance_perplexity": float(len(tokenizer)), "val_tokens": int(val.numel())}
    log(f"phi: validation perplexity {perplexity:.2f} (uniform guessing: {len(tokenizer)})")
    return model, scores


# ------------------------------------------------------------------ the stage
