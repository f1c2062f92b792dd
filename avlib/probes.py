"""Linear probes: what the cached features carry, fact by fact, before the LLM reads them.

The study's per-kind accuracy mixes two questions: does a fact survive the frozen
encoders and their pooling, and does the LLM learn to read it? A linear
classifier trained on the training clips' cached features and scored on the
test clips' answers the first. A fact that no view tells apart better than
chance is lost before the LLM; a fact a view tells well but the models answer
poorly is the LLM's (or the projector's) to learn.

The views of one clip's features, as the LLM receives them:

    video: temporal  the T per-frame tokens (patches averaged), concatenated in order
           spatial   the P per-patch tokens (frames averaged), concatenated
           mean      the mean of all T + P tokens
    audio: tokens    the first window's tokens, concatenated in order
           mean      their mean

Needs the synthetic corpus: its clips.json holds each clip's facts.

`reading_probes` goes one step further, into a finetuned model: where a fact the
features carry is answered poorly, the same probe on the LLM's hidden states,
block by block, shows how far it gets. The views there:

    frames in order   the T temporal tokens' hidden states, concatenated in order
    last frame        the last temporal token's alone
    frames averaged   the mean of the T
    answer position   the prompt's last token, the one whose next token is the answer

`answer_attention` says where that answer position looks: each block's and head's attention weights on the
text, the temporal, spatial and audio tokens, and on each temporal token in order.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from avlib.features import FeatureCache

VIDEO_FACTS = ("shape", "color", "background", "direction")
AUDIO_FACTS = ("word", "sound", "beeps", "speech_first")
VIEWS = ("video: temporal", "video: spatial", "video: mean", "audio: tokens", "audio: mean")
KIND_FACTS = {"shape": "shape", "color": "color", "background": "background", "direction": "direction",
              "word": "word", "sound": "sound", "count": "beeps", "order": "speech_first"}  # audio-aware kind -> fact


def views(video: torch.Tensor | None, audio: torch.Tensor | None, frames: int, tokens_per_window: int) -> dict[str, torch.Tensor]:
    """The probed views of one clip's cached features (a view is absent where its modality is)."""
    out = {}
    if video is not None:
        out["video: temporal"] = video[:frames].flatten()
        out["video: spatial"] = video[frames:].flatten()
        out["video: mean"] = video.mean(dim=0)
    if audio is not None:
        out["audio: tokens"] = audio[:tokens_per_window].flatten()
        out["audio: mean"] = audio[:tokens_per_window].mean(dim=0)
    return out


def probe(train_x: torch.Tensor, train_y: list, test_x: torch.Tensor, test_y: list, steps: int, seed: int = 0) -> float:
    """Test accuracy of a softmax regression (standardised inputs, weight decay) trained full-batch with Adam."""
    labels = sorted(set(train_y) | set(test_y), key=str)
    index = {label: i for i, label in enumerate(labels)}
    ytr = torch.tensor([index[y] for y in train_y])
    yte = torch.tensor([index[y] for y in test_y])
    mean, std = train_x.mean(dim=0), train_x.std(dim=0) + 1e-6
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    torch.manual_seed(seed)
    layer = torch.nn.Linear(xtr.shape[1], len(labels))
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(layer(xtr), ytr).backward()
        optimizer.step()
    with torch.no_grad():
        return float((layer(xte).argmax(dim=1) == yte).float().mean())


def clip_views(data_root: str | Path, cache: FeatureCache, frames: int, tokens_per_window: int) -> dict[str, list]:
    """{"train": [(facts, views)], "test": [...]}: every clip of the synthetic corpus with its features' views."""
    path = Path(data_root) / "clips.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the probes need the synthetic corpus's clip facts (python -m avlib.synth)")
    entries = cache.entries()
    rows = {"train": [], "test": []}
    for clip in json.loads(path.read_text()):
        split = clip["name"].split("_")[0]
        if split not in rows:
            continue
        entry = entries.get(f"clips/{clip['name']}.mp4")
        if entry is None:
            raise KeyError(f"clips/{clip['name']}.mp4 has no cached features in {cache.folder}; run the extraction")
        rows[split].append((clip, views(*cache.load(entry), frames, tokens_per_window)))
    return rows


def applies_to(fact: str, clip: dict) -> bool:
    """Whether a clip has this fact to tell."""
    if fact in VIDEO_FACTS:
        return True
    return bool(clip["has_audio"]) and (fact != "beeps" or clip.get("sound") == "beeps")


def probe_fact(rows: dict[str, list], fact: str, view: str, steps: int = 300, seed: int = 0) -> dict | None:
    """{"accuracy", "chance", "train", "test"} of one fact from one view, or None where no clip has both.

    A fact of what is seen applies to every clip, one of what is heard to clips with a soundtrack, the beep count
    to clips with beeps (as its question is asked); chance is the test share of the training set's most frequent label.
    """
    applies = {split: [(clip[fact], v[view]) for clip, v in rows[split]
                       if clip.get(fact) is not None and view in v and applies_to(fact, clip)]
               for split in rows}
    if not applies["train"] or not applies["test"]:
        return None
    majority = Counter(y for y, _ in applies["train"]).most_common(1)[0][0]
    train_y, train_x = zip(*applies["train"])
    test_y, test_x = zip(*applies["test"])
    accuracy = probe(torch.stack(train_x).float(), list(train_y), torch.stack(test_x).float(), list(test_y), steps, seed)
    return {"accuracy": accuracy, "chance": sum(y == majority for y in test_y) / len(test_y),
            "train": len(train_y), "test": len(test_y)}


AXES = {"horizontal": ("left", "right"), "vertical": ("up", "down")}  # the directions of motion, by axis
SIDE_VIEWS = {"first frame": lambda t: t[0], "last frame": lambda t: t[-1], "frames in order": lambda t: t.flatten()}


def probe_side(rows: dict[str, list], frames: int, steps: int = 300, seed: int = 0) -> dict[str, dict]:
    """{axis: {"first frame", "last frame", "frames in order": accuracy, "test": n}}: the side of the motion (left or right;
    up or down), probed on the clips that move along that axis only, from one frame's temporal token or all of them.

    One frame's token can tell the side where it says where the shape is (at the start, the right side for a shape
    that moves left); where an axis reads well here and its answers do not, its sign is lost in the LLM.
    """
    result = {}
    for axis, sides in AXES.items():
        moving = {split: [(clip["direction"], v["video: temporal"].view(frames, -1)) for clip, v in rows[split]
                          if clip.get("direction") in sides and "video: temporal" in v] for split in rows}
        if not moving["train"] or not moving["test"]:
            continue
        (train_y, train_t), (test_y, test_t) = (zip(*moving["train"]), zip(*moving["test"]))
        result[axis] = {view: probe(torch.stack([pick(t) for t in train_t]).float(), list(train_y),
                                    torch.stack([pick(t) for t in test_t]).float(), list(test_y), steps, seed)
                        for view, pick in SIDE_VIEWS.items()}
        result[axis]["test"] = len(test_y)
    return result


READING_VIEWS = ("frames in order", "last frame", "frames averaged", "answer position")


def frame_slots(model, ids: torch.Tensor, frames: int, who: str) -> list[torch.Tensor]:
    """Each prompt's first `frames` video slots, its temporal tokens; raises, saying what `who` needs, if one has fewer."""
    slots = [row.nonzero().flatten()[:frames] for row in ids == model.video_token_id]
    if any(len(s) < frames for s in slots):
        raise ValueError(f"an item has fewer than {frames} video slots: {who} every item's video "
                         "(model.vision.num_frames temporal tokens)")
    return slots


@torch.no_grad()
def llm_states(model, items: list[dict], frames: int, batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
    """The reading views of each item's hidden states, by depth: [{view: (N, ...)}], depth 0 the LLM's input
    embeddings (media spliced in), depth d the output of block d (the last one after the final norm)."""
    model.eval()
    depths: list[dict[str, list]] = []
    for start in range(0, len(items), batch_size):
        batch = model.prompt_batch(items[start : start + batch_size])  # every prompt ends at the last position
        ids = batch["input_ids"]
        embeds = model.embed(ids, batch["video_features"], batch["audio_features"])
        hidden = model.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], output_hidden_states=True).hidden_states
        slots = frame_slots(model, ids, frames, "the reading views need")
        temporal = [torch.stack([h[i, s] for i, s in enumerate(slots)]).float() for h in hidden]  # (B, T, E) per depth
        if not depths:
            depths = [{view: [] for view in READING_VIEWS} for _ in hidden]
        for views_at, h, t in zip(depths, hidden, temporal):
            views_at["frames in order"].append(t.flatten(1))
            views_at["last frame"].append(t[:, -1])
            views_at["frames averaged"].append(t.mean(dim=1))
            views_at["answer position"].append(h[:, -1].float())
    return [{view: torch.cat(parts) for view, parts in views_at.items()} for views_at in depths]


def reading_probes(model, train_items: list[dict], test_items: list[dict], frames: int, steps: int = 300,
                   seed: int = 0, batch_size: int = 64) -> list[dict]:
    """How far into the LLM a fact gets: [{"depth", "view", "accuracy"}], a linear probe per view and depth, trained to
    name each training item's answer from its hidden states and scored on the test items' (`llm_states` has the views).

    The items are feature items with their answers (`avlib.evaluate.feature_items`), all asking for the same fact.
    """
    if not train_items or not test_items:
        raise ValueError(f"reading probes need training and test items, got {len(train_items)} and {len(test_items)}")
    train_y, test_y = [item["answer"] for item in train_items], [item["answer"] for item in test_items]
    train, test = llm_states(model, train_items, frames, batch_size), llm_states(model, test_items, frames, batch_size)
    return [{"depth": depth, "view": view, "accuracy": probe(at_train[view], train_y, at_test[view], test_y, steps, seed)}
            for depth, (at_train, at_test) in enumerate(zip(train, test)) for view in READING_VIEWS]


ANSWER_PARTS = ("text", "temporal tokens", "spatial tokens", "audio tokens")


@torch.no_grad()
def answer_attention(model, items: list[dict], frames: int, batch_size: int = 64) -> list[dict]:
    """Where the prompt's last position, whose next token is the answer, attends, averaged over `items` (feature items):
    [{"block", "head", part: share of the head's attention weight, "frames": [share on each temporal token, in order]}],
    the parts `ANSWER_PARTS`: the text (system prompt, roles, question), the `frames` temporal tokens, the spatial tokens
    and the audio tokens. The shares of one head sum to 1.

    The weights are the LLM's softmax itself (its eager attention, with the LoRA adapters, merged or not), so this
    reads what the model does: a fact that lives in the order of the frames reaches the answer position directly only
    through a head that weighs the temporal tokens by their place (or through other positions that gathered it first).
    """
    if not items:
        raise ValueError("answer_attention needs at least one item")
    model.eval()
    implementation = model.base_llm.config._attn_implementation
    model.base_llm.set_attn_implementation("eager")  # the fused kernels return no weights
    totals: torch.Tensor | None = None  # (blocks, heads, parts + frames)
    try:
        for start in range(0, len(items), batch_size):
            batch = model.prompt_batch(items[start : start + batch_size])  # padded on the left: every prompt ends last
            ids, mask = batch["input_ids"], batch["attention_mask"].bool()
            embeds = model.embed(ids, batch["video_features"], batch["audio_features"])
            weights = model.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], output_attentions=True).attentions
            last = torch.stack([w[:, :, -1].float() for w in weights], dim=1)  # (B, blocks, heads, L)
            video, audio = ids == model.video_token_id, ids == model.audio_token_id
            for row, slots in enumerate(frame_slots(model, ids, frames, "answer_attention needs")):
                temporal = torch.zeros_like(mask[row])
                temporal[slots] = True
                parts = (mask[row] & ~video[row] & ~audio[row], temporal, video[row] & ~temporal, audio[row])
                shares = torch.stack([last[row][..., part].sum(-1) for part in parts], dim=-1)
                found = torch.cat([shares, last[row][..., slots]], dim=-1)
                totals = found if totals is None else totals + found
    finally:
        model.base_llm.set_attn_implementation(implementation)
    mean = totals / len(items)
    return [{"block": block + 1, "head": head, **dict(zip(ANSWER_PARTS, mean[block, head, :len(ANSWER_PARTS)].tolist())),
             "frames": mean[block, head, len(ANSWER_PARTS):].tolist()}
            for block in range(mean.shape[0]) for head in range(mean.shape[1])]
