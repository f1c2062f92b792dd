import json

import numpy as np
import pytest
import torch

from avlib.template import IGNORE_INDEX


def run(model, batch):
    return model(batch["input_ids"], batch["attention_mask"], batch["video_features"], batch["audio_features"], labels=batch["labels"])


def test_forward_shapes_and_loss(make_model, samples):
    model = make_model()
    batch = model.collate(samples)
    out = run(model, batch)
    assert out.logits.shape == (*batch["input_ids"].shape, model.llm.config.vocab_size)
    assert torch.isfinite(out.loss)
    # clip 0: 2 frames + 16 patches, 1.5 s -> 2 windows x 4 tokens; clip 1: no audio; clip 2: 2.5 s -> 3 windows
    assert [s["video_features"].shape[0] for s in samples] == [18, 19, 17]
    assert [None if s["audio_features"] is None else s["audio_features"].shape[0] for s in samples] == [8, None, 12]
    slots = (batch["input_ids"] == model.audio_token_id).sum(1).tolist()
    assert slots == [8, 0, 12]


def test_media_slots_hold_the_projected_features_in_order(make_model, samples):
    model = make_model()
    batch = model.collate(samples)
    embeds = model.embed(batch["input_ids"], batch["video_features"], batch["audio_features"])
    for i, sample in enumerate(samples):
        video_rows = embeds[i][batch["input_ids"][i] == model.video_token_id]
        torch.testing.assert_close(video_rows, model.vision_projector(sample["video_features"]))
        if sample["audio_features"] is not None:
            audio_rows = embeds[i][batch["input_ids"][i] == model.audio_token_id]
            torch.testing.assert_close(audio_rows, model.audio_projector(sample["audio_features"]))


def test_audio_first_fills_the_same_features_and_the_llm_reads_the_order(cfg, tokenizer, samples):
    import dataclasses

    from avlib.builders import build_model

    def build(order):
        torch.manual_seed(0)
        return build_model(dataclasses.replace(cfg, media_order=order), tokenizer)

    video_first, audio_first = build("video_first"), build("audio_first")
    assert audio_first.media_order == "audio_first"
    batch = audio_first.collate(samples)
    ids = batch["input_ids"][0]
    assert ids.tolist().index(audio_first.audio_token_id) < ids.tolist().index(audio_first.video_token_id)
    embeds = audio_first.embed(ids[None], batch["video_features"][:1], batch["audio_features"][:1])[0]
    torch.testing.assert_close(embeds[ids == audio_first.video_token_id], audio_first.vision_projector(samples[0]["video_features"]))
    torch.testing.assert_close(embeds[ids == audio_first.audio_token_id], audio_first.audio_projector(samples[0]["audio_features"]))
    # the same weights, the slots in another order: the rotary positions differ, so do the logits
    reordered = run(video_first, video_first.collate(samples[:1])).logits[0, -1]
    assert not torch.allclose(run(audio_first, audio_first.collate(samples[:1])).logits[0, -1], reordered)
    with pytest.raises(ValueError, match="media_order must be one of video_first, audio_first, got 'last'"):
        build("last")


def test_the_miniature_phi_turns_at_its_configured_rotary_base(cfg, tokenizer):
    import dataclasses

    from transformers import PhiForCausalLM

    from avlib.builders import tiny_phi_config

    slow = tiny_phi_config(cfg, len(tokenizer))
    fast = tiny_phi_config(dataclasses.replace(cfg, tiny=dataclasses.replace(cfg.tiny, llm_rope_theta=100.0)), len(tokenizer))
    assert (slow.rope_parameters["rope_theta"], fast.rope_parameters["rope_theta"]) == (10000.0, 100.0)
    torch.manual_seed(0)
    llm = PhiForCausalLM(slow).eval()
    turned = PhiForCausalLM(fast).eval()
    turned.load_state_dict(llm.state_dict())  # the same weights; the rotary frequencies follow the config
    ids = torch.arange(3, 23)[None]
    with torch.no_grad():
        before, after = llm(ids).logits, turned(ids).logits
    torch.testing.assert_close(after[:, 0], before[:, 0])  # position 0 is not rotated
    assert not torch.allclose(after[:, 1:], before[:, 1:])


def test_count_mismatch_raises_with_both_counts(make_model, samples):
    model = make_model()
    batch = model.collate(samples)
    short = [f[:-1] for f in batch["video_features"]]
    with pytest.raises(ValueError, match="sample 0: the prompt has 18 video placeholder tokens but 17 video feature vectors"):
        run(model, {**batch, "video_features": short})
    with pytest.raises(ValueError, match="sample 1: the prompt has 0 audio placeholder tokens but 8 audio"):
        run(model, {**batch, "audio_features": [batch["audio_features"][0]] * 3})


def test_loss_ignores_prompt_and_media_positions(make_model, samples):
    model = make_model()
    batch = model.collate(samples)
    media = (batch["input_ids"] == model.video_token_id) | (batch["input_ids"] == model.audio_token_id)
    assert (batch["labels"][media] == IGNORE_INDEX).all()
    # The loss equals cross-entropy over the answer tokens alone.
    out = run(model, batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("lora", [False, True])
def test_logits_at_gives_the_full_logits_of_the_supervised_positions(make_model, samples, lora):
    from avlib.config import LoraConfig
    from avlib.train import predicting, supervised_loss

    model = make_model()
    if lora:
        model.configure_training("finetune", LoraConfig(rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "fc1"]))
        for name, p in model.named_parameters():  # LoRA's B starts at zero: move it so the adapters change the output
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.5)
    model.eval()
    batch = model.collate(samples)
    at = predicting(batch["labels"])
    assert torch.equal(at[:, :-1], batch["labels"][:, 1:] != IGNORE_INDEX) and not at[:, -1].any()
    full = run(model, batch).logits
    some = model(batch["input_ids"], batch["attention_mask"], batch["video_features"], batch["audio_features"], logits_at=at)
    assert some.shape == (int(at.sum()), model.llm.config.vocab_size)
    torch.testing.assert_close(some, full[at])
    torch.testing.assert_close(supervised_loss(some, batch["labels"], at), run(model, batch).loss)


def _lora_moved(model, lora):
    model.configure_training("finetune", lora)
    for name, p in model.named_parameters():  # LoRA's B starts at zero: move it so the adapters change the output
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    return model


def test_the_shared_system_prompt_is_computed_once_with_the_same_logits_and_gradients(make_model, samples, lora):
    from avlib.template import SYSTEM
    from avlib.train import predicting, supervised_loss

    model = _lora_moved(make_model(), lora).train()
    batch = model.collate(samples)
    at = predicting(batch["labels"])
    inputs = (batch["input_ids"], batch["attention_mask"], batch["video_features"], batch["audio_features"])
    embeds = model.embed(*inputs[:1], *inputs[2:])
    start = model.shared_prefix(embeds, batch["attention_mask"])
    assert start >= len(model.tokenizer.encode(SYSTEM, add_special_tokens=False))  # the system prompt, and "USER: "
    assert not torch.equal(embeds[0, start], embeds[1, start])  # the first position that differs is computed per row
    trainable = [p for p in model.parameters() if p.requires_grad]

    def logits_and_grads():
        logits = model(*inputs, logits_at=at)
        return logits.detach(), torch.autograd.grad(supervised_loss(logits, batch["labels"], at), trainable)

    shared, shared_grads = logits_and_grads()
    model.shared_prefix = lambda *args: 0  # every row computed whole
    whole, whole_grads = logits_and_grads()
    torch.testing.assert_close(shared, whole, rtol=1e-4, atol=1e-5)
    for a, b in zip(shared_grads, whole_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_no_prefix_is_shared_where_rows_would_compute_it_differently(make_model, samples, lora):
    model = make_model()
    batch = model.collate(samples)
    embeds = model.embed(batch["input_ids"], batch["video_features"], batch["audio_features"])
    mask = batch["attention_mask"]
    assert model.shared_prefix(embeds, mask) > 0
    assert model.shared_prefix(embeds[:1], mask[:1]) == 0  # one row: nothing to share
    left = model.collate(samples, with_answers=False)  # padded on the left: the rows do not start alike
    assert model.shared_prefix(model.embed(left["input_ids"], left["video_features"], left["audio_features"]), left["attention_mask"]) == 0
    dropping = make_model()
    dropping.configure_training("finetune", type(lora)(rank=4, alpha=8, dropout=0.1))  # each row draws its own masks
    assert dropping.train().shared_prefix(embeds, mask) == 0
    assert dropping.eval().shared_prefix(embeds, mask) > 0
    checkpointing = make_model()
    checkpointing.llm.activation_checkpointing_enable()  # recomputes each block in the backward pass and keeps no cache
    assert checkpointing.train().shared_prefix(embeds, mask) == 0


def test_vision_only_twin_differs_only_in_audio(make_model, samples):
    av, vo = make_model(seed=3), make_model(seed=3, use_audio=False)
    for (name, a), (_, b) in zip(av.state_dict().items(), vo.state_dict().items()):
        assert torch.equal(a, b), name
    vo_batch = vo.collate(samples)
    assert (vo_batch["input_ids"] == vo.audio_token_id).sum() == 0
    assert vo_batch["audio_features"] == [None, None, None]
    # Clip 1 has no audio track: both models see exactly the same input for it.
    av_batch = av.collate(samples[1:2])
    assert torch.equal(av_batch["input_ids"], vo.collate(samples[1:2])["input_ids"])
    torch.testing.assert_close(run(av, av_batch).logits, run(vo, av_batch).logits)
    # Even given audio features, the vision-only model ignores them.
    with pytest.raises(ValueError, match="audio placeholder tokens but 0 audio"):
        run(vo, av.collate(samples[:1]))


TRAINABLE = {
    "pretrain_audio": {"audio_projector"},
    "pretrain_vision": {"vision_projector"},
    "finetune": {"audio_projector", "vision_projector", "lora"},
}


def _part(name: str) -> str:
    if "lora_" in name:
        return "lora"
    return name.split(".")[0]


@pytest.mark.parametrize("stage", list(TRAINABLE))
def test_only_the_stage_parameters_get_gradients(make_model, samples, lora, stage):
    model = make_model()
    model.configure_training(stage, lora)
    run(model, model.collate(samples)).loss.backward()
    with_grad = {_part(n) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {_part(n) for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable == TRAINABLE[stage]
    assert set(model.trained_parts()) == TRAINABLE[stage]


def test_vision_only_finetuning_leaves_the_audio_projector_alone(make_model, samples, lora):
    model = make_model(use_audio=False)
    model.configure_training("finetune", lora)
    assert set(model.trained_parts()) == {"vision_projector", "lora"}


def test_unknown_stage_and_missing_lora(make_model, lora):
    model = make_model()
    with pytest.raises(ValueError, match="unknown training stage 'pretrain'.*pretrain_audio"):
        model.configure_training("pretrain", lora)
    with pytest.raises(ValueError, match="finetune.lora"):
        model.configure_training("finetune")


def _train_steps(model, batch, steps: int, lr: float):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        loss = run(model, batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def test_lora_disabled_model_equals_the_base_model(make_model, samples, lora):
    model = make_model()
    batch = model.collate(samples)
    base = run(model, batch).logits
    model.configure_training("finetune", lora)
    _train_steps(model, batch, steps=3, lr=1e-2)
    tuned = run(model, batch).logits
    with model.llm.disable_adapter():
        disabled_llm = model.llm(inputs_embeds=model.embed(batch["input_ids"], batch["video_features"], batch["audio_features"]))
    assert not torch.allclose(tuned, base)
    # Projectors trained too, so compare the LLM alone on the same (new) embeddings.
    embeds = model.embed(batch["input_ids"], batch["video_features"], batch["audio_features"])
    fresh = make_model()
    torch.testing.assert_close(disabled_llm.logits, fresh.llm(inputs_embeds=embeds).logits)


def test_save_then_load_reproduces_logits_exactly(make_model, samples, lora, cfg, tmp_path):
    model = make_model()
    model.configure_training("finetune", lora)
    batch = model.collate(samples)
    _train_steps(model, batch, steps=3, lr=1e-2)
    expected = run(model, batch).logits
    parts = model.save_trained(tmp_path / "run", config=cfg)
    assert sorted(parts) == ["audio_projector", "lora", "vision_projector"]
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert (tmp_path / "run" / "lora" / "adapter_model.safetensors").is_file()
    restored = make_model()
    assert sorted(restored.load_trained(tmp_path / "run")) == sorted(parts)
    restored.eval()
    assert torch.equal(run(restored, batch).logits, expected)


class _HashOrderedSet(set):
    """A set that iterates in reverse sorted order, as a string-hash seed may make a real one do."""

    def __iter__(self):
        return iter(sorted(set.__iter__(self), reverse=True))


def test_saved_adapter_config_lists_the_target_modules_sorted_whatever_the_set_order(make_model, lora, tmp_path):
    # peft keeps target_modules as a set and writes list(set): without sorting, the file (and DVC's hash of an
    # unchanged model) changed with each process's string hashing
    model = make_model()
    model.configure_training("finetune", lora)
    config = model.llm.peft_config["default"]
    config.target_modules = _HashOrderedSet(config.target_modules)
    assert list(config.target_modules) != sorted(config.target_modules)
    model.save_trained(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "lora" / "adapter_config.json").read_text())
    assert saved["target_modules"] == sorted(lora.target_modules)
    restored = make_model()
    assert "lora" in restored.load_trained(tmp_path / "run")
    assert restored.llm.peft_config["default"].target_modules == set(lora.target_modules)


def test_merged_adapters_give_the_same_logits_and_answers_and_refuse_to_be_saved(make_model, samples, lora, tmp_path):
    from avlib.runtime import for_inference

    model = _lora_moved(make_model(), lora).eval()
    batch = model.collate(samples)
    apart = run(model, batch).logits
    prompts = model.collate(samples, with_answers=False)
    answers = model.generate(prompts, max_new_tokens=6)
    with torch.no_grad(), model.llm.disable_adapter():
        base = run(model, batch).logits
    assert not torch.allclose(apart, base, atol=1e-3)  # the adapters matter here, so merging them must carry them over
    merged = for_inference(model)
    assert merged.lora_merged and not merged.has_lora
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    assert not any(p.requires_grad for p in merged.parameters())
    torch.testing.assert_close(run(merged, batch).logits, apart, rtol=1e-4, atol=1e-4)
    assert merged.generate(prompts, max_new_tokens=6) == answers
    with pytest.raises(ValueError, match="save it before merging"):
        merged.save_trained(tmp_path / "run")


def test_merging_a_model_without_adapters_changes_nothing(make_model, samples):
    model = make_model().eval()
    batch = model.collate(samples)
    expected = run(model, batch).logits
    assert not model.merge_lora().lora_merged
    assert torch.equal(run(model, batch).logits, expected)


def test_projector_pretraining_saves_only_its_projector(make_model, samples, tmp_path):
    model = make_model()
    model.configure_training("pretrain_audio")
    assert model.save_trained(tmp_path) == ["audio_projector"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio_projector.safetensors", "parts.json"]
    with pytest.raises(FileNotFoundError, match="parts.json"):
        make_model().load_trained(tmp_path / "elsewhere")


def test_overfit_one_batch(make_model, samples):
    # End to end through the splice: projectors and the whole LLM train. (With a
    # random frozen LLM, LoRA alone cannot sharpen its near-uniform output head;
    # test_generate_learns_the_answer covers the finetuning policy.)
    model = make_model()
    model.requires_grad_(True)
    model.audio_encoder.requires_grad_(False)
    model.vision_encoder.requires_grad_(False)
    losses = _train_steps(model, model.collate(samples), steps=200, lr=3e-3)
    assert losses[-1] < 0.1 * losses[0], f"loss fell from {losses[0]:.3f} to only {losses[-1]:.3f}"


def test_generate_answers_greedily(make_model, samples):
    model = make_model().eval()
    prompts = model.collate(samples, with_answers=False)
    first = model.generate(prompts, max_new_tokens=4)
    assert len(first) == 3 and all(isinstance(a, str) for a in first)
    assert model.generate(prompts, max_new_tokens=4) == first
    # Left padding: a prompt's answer does not depend on its batch.
    assert model.generate(model.collate(samples[1:2], with_answers=False), max_new_tokens=4) == first[1:2]


def test_generate_learns_the_answer(make_model, samples, lora):
    model = make_model()
    model.configure_training("finetune", lora)
    _train_steps(model, model.collate(samples), steps=150, lr=3e-3)
    answers = model.generate(model.collate(samples, with_answers=False), max_new_tokens=8)
    assert answers == [s["answer"] for s in samples]
    # `answer` batches prompts by length, not in the order asked, and gives each answer back to its question.
    asked = [samples[i] for i in (2, 0, 1, 1, 2, 0, 2)]
    assert model.answer([dict(s, answer=None) for s in asked], batch_size=3, max_new_tokens=8) == [s["answer"] for s in asked]
    assert model.answer([]) == []


def test_encode_media_needs_matching_lists(make_model):
    with pytest.raises(ValueError, match="2 videos but 1 audio"):
        make_model().encode_media([np.zeros((1, 8, 8, 3), np.uint8)] * 2, [None])


def test_a_max_length_beyond_the_llms_positions_is_refused(cfg, tokenizer):
    from avlib.builders import build_model

    cfg.max_length = cfg.tiny.llm_max_positions + 1
    with pytest.raises(ValueError, match="exceeds the LLM's 512 positions"):
        build_model(cfg, tokenizer)
