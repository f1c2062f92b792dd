"""Which input the answer rests on: gradient x input, summed over the audio slots, the video slots and the text.

For one question the model's first answer token is the one it would generate
(greedy). The gradient of that token's log-probability with respect to each
input embedding, times the embedding itself, estimates how much the log-
probability would change if that input were removed (a first-order Taylor
term). Summing its magnitude over the positions of each kind and dividing by
the total gives each kind's share of the answer: a rough, local measure,
used here to compare questions that need audio with those that need vision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

KINDS = ("audio", "video", "text")


def slot_shares(model, items: Sequence[dict]) -> list[dict[str, float]]:
    """For each feature item (question, video_features, audio_features): {audio, video, text} shares summing to 1."""
    model.eval()
    shares = []
    for item in items:
        batch = model.prompt_batch([item])
        ids = batch["input_ids"]
        with torch.enable_grad():
            embeds = model.embed(ids, batch["video_features"], batch["audio_features"]).detach().requires_grad_(True)
            logits = model.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits[0, -1].float()
            log_probs = torch.log_softmax(logits, dim=-1)
            log_probs[log_probs.argmax()].backward()
        relevance = (embeds.grad * embeds.detach()).float().sum(-1).abs()[0]  # (L,)
        masks = {"audio": ids[0] == model.audio_token_id, "video": ids[0] == model.video_token_id}
        masks["text"] = ~(masks["audio"] | masks["video"]) & batch["attention_mask"][0].bool()
        total = float(sum(relevance[m].sum() for m in masks.values())) or 1.0
        shares.append({kind: float(relevance[masks[kind]].sum()) / total for kind in KINDS})
    return shares
