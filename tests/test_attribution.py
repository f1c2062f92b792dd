"""Gradient x input shares: they sum to one, follow the slots, and vanish where an input is zero."""

import math

import torch

from avlib.attribution import slot_shares


def test_shares_cover_the_prompt_and_follow_the_slots(make_model, samples):
    model = make_model()
    shares = slot_shares(model, samples)
    assert len(shares) == len(samples)
    for share, sample in zip(shares, samples):
        assert math.isclose(sum(share.values()), 1.0, rel_tol=1e-6)
        assert share["video"] > 0 and share["text"] > 0
        assert (share["audio"] > 0) == (sample["audio_features"] is not None), "a clip without audio has no audio slots"
    twin = make_model(use_audio=False)
    assert all(s["audio"] == 0.0 for s in slot_shares(twin, samples)), "the twin's prompts carry no audio"


def test_an_input_that_is_zero_gets_no_share(make_model, samples):
    model = make_model()
    with torch.no_grad():  # the vision projector now writes zeros into every video slot
        model.vision_projector[2].weight.zero_()
        model.vision_projector[2].bias.zero_()
    shares = slot_shares(model, samples)
    assert all(s["video"] == 0.0 and s["audio"] + s["text"] > 0.99 for s in shares)
    assert not any(p.grad is not None for p in model.parameters()), "the model's own weights collect no gradient"
