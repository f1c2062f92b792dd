import json

import pytest
import torch

from avlib.probes import (ANSWER_PARTS, READING_VIEWS, SIDE_VIEWS, answer_attention, applies_to, clip_views, probe,
                          probe_fact, probe_side, reading_probes, views)


def test_views_slice_the_tokens_the_llm_receives():
    video = torch.arange(6 * 2, dtype=torch.float32).view(6, 2)  # 2 frames + 4 patches, width 2
    audio = torch.ones(5, 2)  # 4 tokens per window, then a second window's first
    v = views(video, audio, frames=2, tokens_per_window=4)
    assert torch.equal(v["video: temporal"], video[:2].flatten()) and torch.equal(v["video: spatial"], video[2:].flatten())
    assert torch.equal(v["video: mean"], video.mean(0)) and v["audio: tokens"].shape == (8,)
    assert set(views(video, None, 2, 4)) == {"video: temporal", "video: spatial", "video: mean"}


def test_probe_reads_a_linear_fact_and_not_noise():
    g = torch.Generator().manual_seed(0)
    sign = torch.randint(0, 2, (400,), generator=g) * 2 - 1
    x = torch.randn(400, 16, generator=g)
    x[:, 3] += 3 * sign  # a fact written along one direction of the features, among noise
    y = ["a" if s > 0 else "b" for s in sign.tolist()]
    assert probe(x[:300], y[:300], x[300:], y[300:], steps=200) > 0.95
    noise = ["a" if v > 0 else "b" for v in torch.randn(400, generator=g).tolist()]
    assert probe(x[:300], noise[:300], x[300:], noise[300:], steps=200) < 0.7


def _clip(i: int, split: str, has_audio: bool) -> dict:
    return {"name": f"{split}_{i:05d}", "direction": ("left", "right")[i % 2], "word": ("apple", "river")[i // 2 % 2] if has_audio else None,
            "has_audio": has_audio}


def test_probe_fact_finds_where_a_fact_is_and_counts_only_clips_it_applies_to():
    rows = {}
    for split, n in (("train", 80), ("test", 40)):
        rows[split] = []
        for i in range(n):
            clip = _clip(i, split, has_audio=i % 5 != 0)
            sign = 1.0 if clip["direction"] == "right" else -1.0
            video = torch.randn(6, 4) * 0.1
            video[:2, 0] += torch.tensor([-sign, sign])  # the temporal tokens carry the direction, in order
            audio = torch.randn(4, 4) if clip["has_audio"] else None
            rows[split].append((clip, views(video, audio, frames=2, tokens_per_window=4)))
    temporal = probe_fact(rows, "direction", "video: temporal", steps=200)
    assert temporal["accuracy"] == 1.0 and temporal["test"] == 40 and temporal["chance"] == 0.5
    assert probe_fact(rows, "direction", "video: mean", steps=200)["accuracy"] < 0.8  # the mean over time cancels it
    heard = probe_fact(rows, "word", "audio: tokens", steps=200)
    assert heard["train"] == 64 and heard["test"] == 32  # clips without a soundtrack have no word to probe
    assert probe_fact({"train": rows["train"], "test": []}, "direction", "video: temporal") is None


def test_probe_side_tells_which_frame_carries_each_axis_sign():
    # Horizontal clips carry their side in the first and last frames' tokens; vertical ones in the last frame's alone.
    g = torch.Generator().manual_seed(0)
    rows = {}
    for split, n in (("train", 320), ("test", 80)):
        rows[split] = []
        for i in range(n):
            direction = ("left", "right", "up", "down")[i % 4]
            sign = 1.0 if direction in ("right", "down") else -1.0
            video = torch.randn(3 + 4, 4, generator=g) * 0.3  # 3 frames, 4 patches
            if direction in ("left", "right"):
                video[0, 0] -= sign
            video[2, 1] += sign
            rows[split].append(({"name": f"{split}_{i:05d}", "direction": direction}, views(video, None, 3, 4)))
    rows["train"].append(({"name": "train_silent", "direction": None}, views(torch.zeros(7, 4), None, 3, 4)))  # no motion: left out
    result = probe_side(rows, frames=3, steps=200)
    assert set(result) == {"horizontal", "vertical"} and set(result["vertical"]) == {*SIDE_VIEWS, "test"}
    assert result["horizontal"]["test"] == result["vertical"]["test"] == 40
    assert result["horizontal"]["first frame"] > 0.95 and result["vertical"]["first frame"] < 0.75
    assert all(result[axis][view] > 0.95 for axis in result for view in ("last frame", "frames in order")), result
    only_horizontal = {split: [(c, v) for c, v in rows[split] if c["direction"] in ("left", "right")] for split in rows}
    assert set(probe_side(only_horizontal, frames=3, steps=20)) == {"horizontal"}  # an axis without clips is left out


def test_the_beep_count_applies_to_clips_with_beeps_only():
    beeping = {"has_audio": True, "sound": "beeps", "beeps": 2}
    assert applies_to("beeps", beeping) and applies_to("word", beeping)
    assert not applies_to("beeps", {"has_audio": True, "sound": "siren", "beeps": 0})
    assert not applies_to("sound", {"has_audio": False, "sound": None}) and applies_to("shape", {"has_audio": False})


def test_clip_views_names_what_is_missing(tmp_path):
    class NoEntries:  # a cache with nothing extracted
        folder = tmp_path / "features" / "key"

        def entries(self):
            return {}

    with pytest.raises(FileNotFoundError, match="clips.json: missing; the probes need the synthetic corpus"):
        clip_views(tmp_path, NoEntries(), 2, 4)
    (tmp_path / "clips.json").write_text(json.dumps([_clip(0, "train", True)]))
    with pytest.raises(KeyError, match="clips/train_00000.mp4 has no cached features"):
        clip_views(tmp_path, NoEntries(), 2, 4)


def _ordered_items(model, n: int, seed: int) -> list[dict]:
    """Items whose answer lives only in the order of their two frames' tokens: the same two vectors either way round."""
    g = torch.Generator().manual_seed(seed)
    first, second = torch.randn(2, model.vision_encoder.width, generator=torch.Generator().manual_seed(99)) * 3
    items = []
    for i in range(n):
        forward = i % 2 == 0
        frames = torch.stack([first, second] if forward else [second, first])
        patches = torch.randn(16, model.vision_encoder.width, generator=g)  # spatial tokens: noise
        video = torch.cat([frames, patches]) + 0.05 * torch.randn(18, model.vision_encoder.width, generator=g)
        items.append({"question": "which shape moves first", "answer": "right" if forward else "left",
                      "video_features": video, "audio_features": None})
    return items


def test_reading_probes_follow_a_fact_that_lives_in_the_order_of_the_frames(make_model):
    model = make_model()  # 2 frames a clip, an LLM of 2 blocks
    rows = reading_probes(model, _ordered_items(model, 80, 0), _ordered_items(model, 40, 1), frames=2, steps=200)
    assert [(r["depth"], r["view"]) for r in rows] == [(d, v) for d in range(3) for v in READING_VIEWS]
    at_input = {r["view"]: r["accuracy"] for r in rows if r["depth"] == 0}
    assert at_input["frames in order"] == 1.0 and at_input["last frame"] == 1.0  # the last temporal slot, not the last video slot
    assert at_input["frames averaged"] < 0.75  # the mean of the same two tokens either way round: nothing to read
    assert at_input["answer position"] < 0.75  # before any block the prompt's last token has seen nothing


def test_reading_probes_name_what_they_need(make_model):
    model = make_model()
    items = _ordered_items(model, 4, 0)
    with pytest.raises(ValueError, match="need training and test items, got 4 and 0"):
        reading_probes(model, items, [], frames=2)
    no_video = [dict(items[0], video_features=None)] * 2
    with pytest.raises(ValueError, match="fewer than 2 video slots"):
        reading_probes(model, no_video, no_video, frames=2)


def test_answer_attention_splits_each_heads_weight_over_the_parts_of_the_prompt(make_model, samples):
    model = make_model()
    rows = answer_attention(model, samples, frames=2)
    blocks, heads = model.base_llm.config.num_hidden_layers, model.base_llm.config.num_attention_heads
    assert [(r["block"], r["head"]) for r in rows] == [(b, h) for b in range(1, blocks + 1) for h in range(heads)]
    for r in rows:
        assert sum(r[part] for part in ANSWER_PARTS) == pytest.approx(1.0, abs=1e-5)
        assert len(r["frames"]) == 2 and sum(r["frames"]) == pytest.approx(r["temporal tokens"], abs=1e-6)
        assert r["audio tokens"] > 0  # two of the three samples have audio
    assert model.base_llm.config._attn_implementation == "sdpa"  # the eager attention it needed is undone
    twin = make_model(use_audio=False)
    assert all(r["audio tokens"] == 0 for r in answer_attention(twin, samples, frames=2))


def test_answer_attention_reads_the_softmax_the_llm_computes(make_model, samples):
    """With every query and key zero, each position weighs all it can see alike: each part's share is its length."""
    model = make_model()
    for name, param in model.base_llm.named_parameters():
        if any(f"{proj}." in name for proj in ("q_proj", "k_proj")):
            param.data.zero_()
    expected = torch.zeros(len(ANSWER_PARTS) + 2)
    for sample in samples:
        ids = model.prompt_batch([sample])["input_ids"][0]
        video, audio = (ids == model.video_token_id).sum(), (ids == model.audio_token_id).sum()
        counts = torch.tensor([len(ids) - video - audio, 2, video - 2, audio, 1, 1], dtype=torch.float32)
        expected += counts / len(ids) / len(samples)
    for r in answer_attention(model, samples, frames=2, batch_size=2):  # one batch with padding, one without
        found = torch.tensor([r[part] for part in ANSWER_PARTS] + r["frames"])
        torch.testing.assert_close(found, expected, atol=1e-5, rtol=0)


def test_answer_attention_names_what_it_needs(make_model, samples):
    model = make_model()
    with pytest.raises(ValueError, match="needs at least one item"):
        answer_attention(model, [], frames=2)
    with pytest.raises(ValueError, match="fewer than 2 video slots"):
        answer_attention(model, [dict(samples[0], video_features=None)], frames=2)
