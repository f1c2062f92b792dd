"""avlib.prepare on small fixture folders in each source's real layout, written here."""

import json

import numpy as np
import pytest

from avlib.config import profile_params
from avlib.datasets import read_corpus_split
from avlib.features import corpus_media
from avlib.prepare import MissingMedia, estimate_cost, main, prepare, subsample
from avlib.media import write_media

RATE = 16000


def tone(seconds=0.5):
    return (0.2 * np.sin(2 * np.pi * 330 * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def video(path, audio=True):
    return write_media(path, np.full((4, 16, 16, 3), 60, np.uint8), 8, tone() if audio else None, RATE)


@pytest.fixture
def downloads(tmp_path):
    root = tmp_path / "downloads"
    chapter = root / "LibriSpeech" / "train-clean-100" / "103" / "1240"
    chapter.mkdir(parents=True)
    lines = []
    for i in range(4):
        write_media(chapter / f"103-1240-{i:04d}.flac", audio=tone(), sample_rate=RATE)
        lines.append(f"103-1240-{i:04d} CHAPTER {i} OF THE BOOK")
    (chapter / "103-1240.trans.txt").write_text("\n".join(lines) + "\n")

    clotho = root / "clotho"
    (clotho / "development").mkdir(parents=True)
    write_media(clotho / "development" / "rain.wav", audio=tone(), sample_rate=RATE)
    (clotho / "clotho_captions_development.csv").write_text(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\nrain.wav,rain falls,steady rain,a shower,drops,wet day\n")

    caps = root / "audiocaps"
    (caps / "audio").mkdir(parents=True)
    write_media(caps / "audio" / "abc_30.wav", audio=tone(), sample_rate=RATE)
    (caps / "train.csv").write_text("audiocap_id,youtube_id,start_time,caption\n1,abc,30,a dog barks\n2,missing,10,a cat\n")

    instruct = root / "videoinstruct"
    (instruct / "videos").mkdir(parents=True)
    video(instruct / "videos" / "v_a.mp4", audio=True)
    video(instruct / "videos" / "v_b.mp4", audio=False)
    (instruct / "VideoInstruct100K.json").write_text(json.dumps(
        [{"video_id": "v_a", "q": "What happens?", "a": "A man talks."}, {"video_id": "v_b", "q": "Where?", "a": "Outside."}]))

    bench = root / "video_chatgpt"
    (bench / "videos").mkdir(parents=True)
    video(bench / "videos" / "v_t.mp4")
    (bench / "generic_qa.json").write_text(json.dumps([{"Q": "Describe it.", "A": "A talk.", "video_name": "v_t"}]))
    (bench / "temporal_qa.json").write_text(json.dumps([{"Q": "What first?", "A": "Talking.", "video_name": "v_t"}]))
    (bench / "consistency_qa.json").write_text(json.dumps([{"Q1": "Who?", "Q2": "Which person?", "A": "A man.", "video_name": "v_t"}]))

    anet = root / "activitynet_qa"
    (anet / "videos").mkdir(parents=True)
    video(anet / "videos" / "v_q.mp4")
    (anet / "test_q.json").write_text(json.dumps([{"question": "is it day", "question_id": "v_q_0", "video_name": "q"}]))
    (anet / "test_a.json").write_text(json.dumps([{"answer": "yes", "question_id": "v_q_0", "type": 3}]))
    return root


def test_every_source_prepares_into_corpus_records(downloads, tmp_path):
    out = tmp_path / "paper"
    prepare("librispeech", downloads / "LibriSpeech", out, log=lambda *a: None)
    prepare("clotho", downloads / "clotho", out, log=lambda *a: None)
    prepare("audiocaps", downloads / "audiocaps", out, on_missing="skip", log=lambda *a: None)
    prepare("videoinstruct", downloads / "videoinstruct", out, log=lambda *a: None)
    prepare("video-chatgpt", downloads / "video_chatgpt", out, log=lambda *a: None)
    prepare("activitynet-qa", downloads / "activitynet_qa", out, log=lambda *a: None)

    speech = read_corpus_split(out, "speech_to_text")
    assert [e.answer for e in speech][:2] == ["chapter 0 of the book", "chapter 1 of the book"]
    assert all(e.media.is_file() and e.media.is_symlink() for e in speech)
    captions = read_corpus_split(out, "audio_captions")
    assert len(captions) == 5 + 1  # Clotho's five captions and AudioCaps' one present file
    train = json.loads((out / "splits" / "video_instructions_train.json").read_text())
    val = json.loads((out / "splits" / "video_instructions_val.json").read_text())
    assert len(train) == len(val) == 1 and train[0]["video"] != val[0]["video"]  # whole videos held out for validation
    assert sorted((r["video"], r["has_audio"]) for r in train + val) == [("media/videos/v_a.mp4", True), ("media/videos/v_b.mp4", False)]
    assert json.loads((out / "benchmarks" / "video_chatgpt" / "consistency_qa.json").read_text())[0]["Q2"] == "Which person?"
    anet = json.loads((out / "benchmarks" / "activitynet_qa" / "qa.json").read_text())
    assert (anet[0]["A"], anet[0]["Q"], anet[0]["question_id"]) == ("yes", "is it day", "v_q_0")  # the raw question, its id
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"]["audiocaps"]["missing"] == 1 and (out / "missing_audiocaps.txt").read_text().strip().endswith("missing_10.wav")
    media = corpus_media(out)
    assert (out / "clips" / "v_t.mp4") in media and all(m.is_file() for m in media)


def test_missing_media_stop_by_default(downloads, tmp_path):
    with pytest.raises(MissingMedia, match="1 of 2 media files are missing .*--on-missing skip"):
        prepare("audiocaps", downloads / "audiocaps", tmp_path / "out", log=lambda *a: None)
    assert main(["audiocaps", "--src", str(downloads / "audiocaps"), "--out", str(tmp_path / "cli")]) == 2


def test_seeded_subsampling(downloads, tmp_path):
    a = prepare("librispeech", downloads / "LibriSpeech", tmp_path / "a", limit=2, seed=7, log=lambda *a: None)
    prepare("librispeech", downloads / "LibriSpeech", tmp_path / "b", limit=2, seed=7, log=lambda *a: None)
    assert a["items"] == 2
    assert (tmp_path / "a" / "splits" / "speech_to_text.json").read_text() == (tmp_path / "b" / "splits" / "speech_to_text.json").read_text()
    assert len(subsample(list(range(10)), 3, seed=1)) == 3 and subsample(list(range(10)), 3, seed=1) == sorted(subsample(list(range(10)), 3, seed=1))


def test_wrong_folder_says_what_to_download(tmp_path):
    assert main(["clotho", "--src", str(tmp_path / "nowhere")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["librispeech", "--src", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2


def test_cost_estimate(downloads, tmp_path):
    out = tmp_path / "paper"
    prepare("librispeech", downloads / "LibriSpeech", out, log=lambda *a: None)
    prepare("videoinstruct", downloads / "videoinstruct", out, log=lambda *a: None)
    prepare("video-chatgpt", downloads / "video_chatgpt", out, log=lambda *a: None)
    _, params = profile_params("paper")
    cost = estimate_cost(params, out, tokens_per_second=10000, gpu="test")
    finetune = cost["stages"]["finetune_av"]
    assert finetune["tokens"] > 100 + 729 + 64  # the one training instruction (the other is held out), all its media tokens
    assert finetune["gpu_hours"] == pytest.approx(finetune["tokens"] / 10000 / 3600)
    assert cost["judge"]["benchmark_items"] == 3 and cost["judge"]["cost_at_most"] >= 0


def test_undecodable_media_are_reported_with_the_reason_and_stop_or_are_skipped(downloads, tmp_path):
    from avlib.prepare import UnreadableMedia

    videos = downloads / "videoinstruct" / "videos"
    (videos / "v_a.mp4").write_bytes((videos / "v_a.mp4").read_bytes()[:300])  # a download cut short
    with pytest.raises(UnreadableMedia, match="1 media files cannot be decoded .*v_a.mp4"):
        prepare("videoinstruct", downloads / "videoinstruct", tmp_path / "stop", log=lambda *a: None)
    assert "v_a.mp4\t" in (tmp_path / "stop" / "unreadable_videoinstruct.txt").read_text()
    prepare("videoinstruct", downloads / "videoinstruct", tmp_path / "skip", on_missing="skip", log=lambda *a: None)
    records = [r for name in ("train", "val") for r in json.loads((tmp_path / "skip" / "splits" / f"video_instructions_{name}.json").read_text())]
    assert [r["video"] for r in records] == ["media/videos/v_b.mp4"]


def test_a_limit_below_one_is_refused_by_the_command_line(downloads, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["librispeech", "--src", str(downloads / "LibriSpeech"), "--out", str(tmp_path), "--limit", "-1"])
    assert "must be 1 or more, got -1" in capsys.readouterr().err
