from pathlib import Path

import matplotlib.container
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from avlib.evaluate import ABLATIONS, Neutral, ablate, accuracy_by, muted_against_twin, paired_bootstrap, results_table
from avlib.scoring import exact_match, facts, is_correct, normalise_answer
from avlib.plots import ablation_deltas, accuracy_by_needs, criteria, save_figures


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
    untouched = ablate(items, "none", neutral)
    assert all(u["audio_features"] is i["audio_features"] and u["video_features"] is i["video_features"] for u, i in zip(untouched, items))
    assert set(ABLATIONS) == {"none", "mute_audio", "blank_frames", "swap_audio"}  # each tested above


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


def test_the_muted_model_meets_its_twin_only_on_clips_with_a_soundtrack():
    # Two silent clips the muted AV model still answers right ("There is no sound."), the twin wrong; on the
    # three clips with sound both are right once, on the audio-visual one the muted model once more.
    needs = ["audio", "audio", "audio", "audio", "audio", "audio-visual"]
    muted = [{"needs": n, "correct": c} for n, c in zip(needs, (True, True, True, False, False, True))]
    twin = [{"needs": n, "correct": c} for n, c in zip(needs, (False, False, False, True, False, False))]
    heard = [False, False, True, True, True, True]
    result = muted_against_twin(muted, twin, heard, resamples=500, seed=0)
    assert result["items"] == {"heard": {"audio": 3, "audio-visual": 1}, "silent": {"audio": 2, "audio-visual": 0}}
    audio = result["difference"]["audio"]
    assert audio["mean"] == 0.0 and audio["n"] == 3 and audio["ci"][0] < 0 < audio["ci"][1]
    assert paired_bootstrap([1, 1, 1, 0, 0], [0, 0, 0, 1, 0])["mean"] == 0.4  # what counting the silent clips would say
    assert result["difference"]["audio-visual"]["mean"] == 1.0
    with pytest.raises(ValueError, match="same records"):
        muted_against_twin(muted, twin[:-1], heard)


def test_results_table_and_figures(tmp_path):
    table = results_table(_metrics())
    assert "| audio | 10 | 0.900 | 0.200 | +0.200 [+0.100, +0.300] |" in table and "| mute audio |" in table
    assert "| word | 0.900 | 0.100 |" in table and "| accuracy | 0.500 | 0.250 | +0.200 [+0.100, +0.300] |" in table
    assert "muted against" not in table  # metrics written before the comparison existed still render
    metrics = _metrics()
    metrics["audio_aware"]["ablations"]["mute_audio"]["against_twin"] = {
        "difference": {"audio": {"mean": -0.015, "ci": [-0.031, 0.001], "n": 1525, "resamples": 2000}},
        "items": {"heard": {"audio": 1525}, "silent": {"audio": 168}}}
    assert "| audio | 1525 (168) | -0.015 [-0.031, +0.001] |" in results_table(metrics)
    paths = save_figures(_metrics(), tmp_path)
    assert [p.name for p in paths] == ["accuracy_by_needs.png", "criteria.png", "ablations.png"]
    for path in paths:
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[:2] == (round(3.8 * 120), round(8.5 * 120)) and pixels[..., :3].std() > 0.05, f"{path.name} is drawn"


def _drawn(draw, *args):
    """Draw into a fresh figure; return the axes, their bars' heights and whether the legend lies right of the data."""
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    draw(_metrics(), ax, *args)
    fig.canvas.draw()
    legend = ax.get_legend()
    outside = legend.get_window_extent().x0 >= ax.get_window_extent().x1
    heights = [round(bar.get_height(), 6) for bar in ax.patches]
    plt.close(fig)
    return ax, heights, outside


def test_each_figure_draws_the_numbers_it_is_given():
    ax, heights, outside = _drawn(accuracy_by_needs)
    assert heights == [0.9, 0.8, 0.95, 0.2, 0.1, 0.95], "AV then twin, audio / audio-visual / visual"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["audio", "audio-visual", "visual"]
    assert ax.get_ylabel() == "accuracy" and outside, "labelled, and the legend hides no bar"
    notes = [t.get_text() for t in ax.texts]
    assert notes[0] == "Δ +0.20\n[+0.10, +0.30]" and len(notes) == 3
    ax, heights, outside = _drawn(criteria)
    assert heights == [3.0, 3.0, 2.0, 2.0] and "reference judge" in ax.get_ylabel() and outside
    ax, heights, outside = _drawn(ablation_deltas)
    errorbars = [c for c in ax.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    assert heights == [-0.1] * 9 and len(errorbars) == 3 and outside, "three needs x three ablations, CIs drawn"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mute audio", "blank frames", "swap audio"]


@pytest.mark.parametrize(
    "prediction, reference, right",
    [("Two.", "two", True), ("2", "two", True), ("acoustic guitar", "acoustic_guitar", True), ("The piano", "piano", True),
     ("Yes", "yes", True), ("left", "right", False), ("two pianos", "two", False), ("", "no", False), ("Ten.", "ten", True)],
)
def test_music_avqa_exact_match_after_normalisation(prediction, reference, right):
    assert exact_match(prediction, reference) is right


def test_normalised_answers_spell_the_closed_set():
    assert normalise_answer("Acoustic Guitar!") == "acoustic_guitar" and normalise_answer("0") == "zero"


def test_the_answer_prior_is_the_accuracy_of_the_most_common_training_answer():
    from avlib.datasets import Example
    from avlib.evaluate import answer_prior

    train = [Example(str(i), Path("x.mp4"), "q", answer, "visual", kind) for i, (answer, kind) in enumerate(
        [("A circle.", "shape")] * 3 + [("A square.", "shape")] * 2 + [("Left.", "direction"), ("Up.", "direction"), ("Up.", "direction")])]
    records = [{"A": a, "kind": k} for a, k in [("A circle.", "shape"), ("A square.", "shape"), ("A circle.", "shape"),
                                                ("A star.", "shape"), ("Up.", "direction"), ("Down.", "direction"), ("Tiger.", "word")]]
    prior = answer_prior(train, records)
    assert prior == {"direction": 0.5, "shape": 0.5}, "always 'A circle.' and 'Up.'; no training answer for word"
