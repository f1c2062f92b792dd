import numpy as np
import pytest
import torch

from avlib.evaluate import ABLATIONS, Neutral, ablate, accuracy_by, paired_bootstrap, results_table
from avlib.scoring import exact_match, facts, is_correct, normalise_answer
from avlib.plots import save_figures


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A red circle moves to the left on a navy background.",
         {"color": "red", "shape": "circle", "direction": "left", "background": "navy"}),
        ("Three low beeps, then a voice says tiger.", {"count": "3", "pitch": "low", "sound": "beeps", "first": "beeps", "word": "tiger"}),
        ("There is no sound.", {"silent": "yes"}),
        ("Two.", {"count": "2"}),
        ("A low hum.", {"sound": "hum", "first": "hum"}),
        ("The shape ends at the top.", {"direction": "up"}),
    ],
)
def test_facts(text, expected):
    assert facts(text) == expected


@pytest.mark.parametrize(
    "prediction, reference, kind, right",
    [
        ("Orange.", "Orange.", "color", True),
        ("orange", "Orange.", "color", True),
        ("Red.", "Orange.", "color", False),
        ("Silver, and a square.", "Silver, and a square.", "word+shape", True),
        ("Silver, and a circle.", "Silver, and a square.", "word+shape", False),
        ("Silver.", "Silver, and a square.", "word+shape", False),  # half an answer is wrong
        ("The voice.", "The voice.", "order", True),
        ("The siren.", "The voice.", "order", False),
        ("There is no sound.", "Apple.", "word", False),
        ("Apple.", "There is no sound.", "word", False),
        ("There is no sound.", "There is no sound.", "word", True),
    ],
)
def test_is_correct(prediction, reference, kind, right):
    assert is_correct(prediction, reference, kind) is right


def test_paired_bootstrap():
    a, b = np.ones(200), np.r_[np.ones(100), np.zeros(100)]
    result = paired_bootstrap(a, b, resamples=500, seed=1)
    assert result["mean"] == pytest.approx(0.5) and result["ci"][0] < 0.5 < result["ci"][1] and result["ci"][0] > 0.35
    assert paired_bootstrap(a, a)["ci"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="equal, non-zero length"):
        paired_bootstrap([1, 2], [1])


def test_accuracy_by():
    records = [{"needs": "audio", "correct": True}, {"needs": "audio", "correct": False}, {"needs": "visual", "correct": True}]
    assert accuracy_by(records) == {"audio": 0.5, "visual": 1.0}


def test_ablations_keep_token_counts_and_neutralise_one_modality(make_model):
    model = make_model()  # 1 s windows of 4 tokens; 16 patches
    g = torch.Generator().manual_seed(0)
    items = [{"question": "q", "video_features": torch.randn(2 + 16, 32, generator=g),
              "audio_features": None if i == 2 else torch.randn(4 * (1 + i % 2), 32, generator=g)} for i in range(6)]
    neutral = Neutral(model, num_frames=2, frame_size=32)
    muted = ablate(items, "mute_audio", neutral)
    assert all((m["audio_features"] is None) == (i["audio_features"] is None) for m, i in zip(muted, items))
    assert torch.equal(muted[0]["audio_features"], muted[4]["audio_features"])  # silence is silence
    assert torch.equal(muted[0]["video_features"], items[0]["video_features"])
    blank = ablate(items, "blank_frames", neutral)
    assert blank[0]["video_features"].shape == items[0]["video_features"].shape
    assert torch.equal(blank[0]["video_features"], blank[1]["video_features"]) and torch.equal(blank[0]["audio_features"], items[0]["audio_features"])
    swapped = ablate(items, "swap_audio", neutral, seed=3)
    for s, o in zip(swapped, items):
        if o["audio_features"] is not None:
            assert s["audio_features"].shape == o["audio_features"].shape
            assert not torch.equal(s["audio_features"], o["audio_features"])  # nobody keeps their own audio
    assert sorted(id(s["audio_features"]) for s in swapped if s["audio_features"] is not None) == sorted(
        id(o["audio_features"]) for o in items if o["audio_features"] is not None)
    with pytest.raises(ValueError, match="unknown ablation"):
        ablate(items, "mirror", neutral)
    assert ABLATIONS[0] == "none" and ablate(items, "none", neutral)[3]["audio_features"] is items[3]["audio_features"]


def _metrics():
    needs = ("audio", "audio-visual", "visual")
    diff = {"mean": 0.2, "ci": [0.1, 0.3], "n": 10, "resamples": 100}
    return {
        "judge": "reference",
        "benchmarks": ["audio_aware", "video_chatgpt", "activitynet_qa"],
        "audio_aware": {
            "av": dict(zip(needs, (0.9, 0.8, 0.95))), "vision_only": dict(zip(needs, (0.2, 0.1, 0.95))),
            "by_kind": {"av": {"word": 0.9}, "vision_only": {"word": 0.1}}, "items": dict(zip(needs, (10, 10, 10))),
            "difference": {n: diff for n in needs},
            "ablations": {a: {"accuracy": {}, "delta": {n: -0.1 for n in needs}, "delta_ci": {n: [-0.2, 0.0] for n in needs}}
                          for a in ("mute_audio", "blank_frames", "swap_audio")},
        },
        "video_chatgpt": {"av": {c: 3.0 for c in ("correctness", "temporal")}, "vision_only": {c: 2.0 for c in ("correctness", "temporal")},
                          "difference": {c: diff for c in ("correctness", "temporal")}},
        "activitynet_qa": {"av": {"accuracy": 0.5, "score": 2.5}, "vision_only": {"accuracy": 0.25, "score": 1.25},
                           "difference": {"accuracy": diff, "score": diff}, "items": 4},
    }


def test_results_table_and_figures(tmp_path):
    table = results_table(_metrics())
    assert "| audio | 10 | 0.900 | 0.200 | +0.200 [+0.100, +0.300] |" in table and "| mute audio |" in table
    assert "| word | 0.900 | 0.100 |" in table and "| accuracy | 0.500 | 0.250 | +0.200 [+0.100, +0.300] |" in table
    paths = save_figures(_metrics(), tmp_path)
    assert [p.name for p in paths] == ["accuracy_by_needs.png", "criteria.png", "ablations.png"]
    assert all(p.stat().st_size > 5000 for p in paths)


@pytest.mark.parametrize(
    "prediction, reference, right",
    [("Two.", "two", True), ("2", "two", True), ("acoustic guitar", "acoustic_guitar", True), ("The piano", "piano", True),
     ("Yes", "yes", True), ("left", "right", False), ("two pianos", "two", False), ("", "no", False), ("Ten.", "ten", True)],
)
def test_music_avqa_exact_match_after_normalisation(prediction, reference, right):
    assert exact_match(prediction, reference) is right


def test_normalised_answers_spell_the_closed_set():
    assert normalise_answer("Acoustic Guitar!") == "acoustic_guitar" and normalise_answer("0") == "zero"
