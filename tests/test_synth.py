import dataclasses
import json

import numpy as np
import pytest

from avlib import synth
from avlib.media import load_clip

SMALL = synth.Profile(train_clips=6, val_clips=2, test_clips=5, speech_clips=3, sound_clips=3, images=3,
                      no_audio_fraction=0.3, long_fraction=0.4)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    synth.build(SMALL, out, seed=1, workers=2, progress=False)
    return out


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_builds_are_byte_identical(corpus, tmp_path):
    synth.build(SMALL, tmp_path, seed=1, workers=1, progress=False)  # other worker count, other order
    assert _files(corpus) == _files(tmp_path)


def test_layout_and_official_benchmark_formats(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["counts"]["train_clips"] == 6 and manifest["counts"]["test_clips"] == 5
    bench = corpus / "benchmarks" / "video_chatgpt"
    for name in ("generic_qa", "temporal_qa"):
        items = json.loads((bench / f"{name}.json").read_text())
        assert len(items) == 5 and all(set(i) == {"Q", "A", "video_name"} for i in items)
    consistency = json.loads((bench / "consistency_qa.json").read_text())
    assert all(set(i) == {"Q1", "Q2", "A", "video_name"} for i in consistency)
    aware = json.loads((corpus / "benchmarks" / "audio_aware" / "qa.json").read_text())
    assert {i["needs"] for i in aware} == {"audio", "visual", "audio-visual"}
    for item in aware:
        assert (corpus / "clips" / f"{item['video_name']}.mp4").is_file()


def test_clips_match_their_facts(corpus):
    facts = json.loads((corpus / "clips.json").read_text())
    assert any(not f["has_audio"] for f in facts) and any(f["duration"] > SMALL.seconds for f in facts)
    for f in facts:
        clip = load_clip(corpus / "clips" / f"{f['name']}.mp4", num_frames=8)
        assert clip.frames.shape == (8, SMALL.size, SMALL.size, 3)
        assert clip.duration == pytest.approx(f["duration"], abs=0.05)
        if not f["has_audio"]:
            assert clip.audio is None  # no track at all, not a silent one
            continue
        assert len(clip.audio) == round(f["duration"] * 16000)
        start, end = (round(t * 16000) for t in f["speech_span"])
        speech_rms = np.sqrt(np.mean(clip.audio[start:end] ** 2))
        assert speech_rms > 5 * 0.003  # well above the room noise
        if f["duration"] > SMALL.seconds:  # long clips: the speech crosses the first window's end
            assert f["speech_span"][0] < SMALL.seconds < f["speech_span"][1]


def test_beeps_are_countable_in_the_audio():
    rng = np.random.default_rng(0)
    for count in range(1, 5):
        wave = synth.synth_sound("beeps", rng, beeps=count, pitch="low")
        loud = np.convolve(np.abs(wave) > 0.1, np.ones(40) / 40, mode="same") > 0.5
        onsets = np.count_nonzero(np.diff(loud.astype(int)) == 1) + int(loud[0])
        assert onsets == count


AUDIO_FIELDS = {"word": "river", "sound": "beeps", "beeps": 3, "pitch": "low", "speech_first": False}
VISUAL_FIELDS = {"shape": "diamond", "color": "purple", "background": "brown", "direction": "up"}


def _facts(**changes):
    base = synth.Facts(name="x", shape="circle", color="red", background="black", direction="left", duration=4.0,
                       has_audio=True, word="apple", sentence="The word is apple.", voice="en-us", sound="beeps",
                       beeps=2, pitch="high", speech_first=True)
    return dataclasses.replace(base, **changes)


def _answers(facts):
    return {q.kind: (q.answer, q.needs) for q in synth.questions(facts, np.random.default_rng(0))}


def test_audio_answers_depend_only_on_the_audio():
    base, revisual = _answers(_facts()), _answers(_facts(**VISUAL_FIELDS))
    reaudio = _answers(_facts(**AUDIO_FIELDS))
    for kind, (answer, needs) in base.items():
        if needs == "audio":
            assert revisual[kind][0] == answer, kind  # changing what is seen changes no audio answer
            assert reaudio[kind][0] != answer, kind  # and what is heard does
        elif needs == "visual":
            assert reaudio[kind][0] == answer, kind
            assert revisual[kind][0] != answer, kind
        else:  # audio-visual: both matter
            assert revisual[kind][0] != answer and reaudio[kind][0] != answer, kind


def test_frames_cannot_show_audio_facts():
    profile = synth.PROFILES["smoke"]
    a = synth.render_frames(_facts(), profile)
    b = synth.render_frames(_facts(**AUDIO_FIELDS), profile)
    assert np.array_equal(a, b)


def test_clips_without_audio_answer_audio_questions_with_no_sound():
    answers = _answers(_facts(has_audio=False, word=None, sound=None, beeps=0, pitch=None))
    assert answers["word"][0] == answers["sound"][0] == "There is no sound."
    assert "count" not in answers and "order" not in answers


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown corpus profile 'huge'"):
        synth.build("huge", "/tmp/never")


def test_half_the_soundtracks_have_beeps_and_every_tiny_kind_has_200_test_items():
    """Beep counts are tested on the tiny profile's test clips with a soundtrack and beeps (the rarest kind)."""
    profile = synth.PROFILES["tiny"]
    sounds, tested = [], 0
    for index in range(profile.test_clips):
        facts, _ = synth.clip_facts(0, "test", index, profile)
        sounds.append(facts.sound)
        tested += facts.has_audio and facts.sound == "beeps"
    heard = [s for s in sounds if s]
    assert abs(heard.count("beeps") / len(heard) - synth.BEEPS_SHARE) < 0.06
    assert set(heard) == set(synth.SOUNDS), "every other sound still plays"
    assert tested >= 200
