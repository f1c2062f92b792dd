import json

import numpy as np
import pytest
import torch
from PIL import Image

from avlib import synth
from avlib.datasets import (
    CAPTION_AUDIO,
    TRANSCRIBE,
    DataError,
    MediaDataset,
    collate_media,
    read_activitynet_qa,
    read_qa_benchmark,
    read_audiocaps,
    read_clotho,
    read_corpus_split,
    read_librispeech,
    read_video_chatgpt,
    read_videoinstruct,
)
from avlib.media import MediaError, write_media

RATE = 16000


def _tone(seconds=1.0):
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def _video(path, frames=8):
    return write_media(path, np.full((frames, 32, 32, 3), 90, np.uint8), 8, _tone(), RATE)


def test_librispeech_layout(tmp_path):
    chapter = tmp_path / "train-clean-100" / "19" / "198"
    chapter.mkdir(parents=True)
    (chapter / "19-198.trans.txt").write_text("19-198-0000 NORTHANGER ABBEY\n19-198-0001 CHAPTER ONE\n")
    for utt in ("19-198-0000", "19-198-0001"):
        write_media(chapter / f"{utt}.flac", audio=_tone(), sample_rate=RATE)
    examples = read_librispeech(tmp_path)
    assert [e.answer for e in examples] == ["northanger abbey", "chapter one"]
    assert examples[0].question == TRANSCRIBE and examples[0].media == chapter / "19-198-0000.flac"
    assert all(e.media.is_file() and e.needs == "audio" for e in examples)


def test_librispeech_errors(tmp_path):
    with pytest.raises(DataError, match="no \\*.trans.txt"):
        read_librispeech(tmp_path)
    (tmp_path / "1-2.trans.txt").write_text("1-2-0000\n")
    with pytest.raises(DataError, match=r"1-2.trans.txt:1: expected 'UTTERANCE-ID TEXT'"):
        read_librispeech(tmp_path)


def test_audiocaps_csv(tmp_path):
    (tmp_path / "train.csv").write_text("audiocap_id,youtube_id,start_time,caption\n91139,r1nicOVtvkQ,130,A woman talks nearby as water pours\n")
    (example,) = read_audiocaps(tmp_path / "train.csv", tmp_path / "audio")
    assert example.media == tmp_path / "audio" / "r1nicOVtvkQ_130.wav"
    assert example.answer == "A woman talks nearby as water pours" and example.question == CAPTION_AUDIO


def test_clotho_csv(tmp_path):
    header = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
    (tmp_path / "clotho_captions_development.csv").write_text(header + 'rain.wav,rain falls,"rain, then thunder",a storm,water drips,wind and rain\n')
    examples = read_clotho(tmp_path / "clotho_captions_development.csv", tmp_path)
    assert len(examples) == 5 and examples[1].answer == "rain, then thunder"
    assert {e.media.name for e in examples} == {"rain.wav"}


def test_csv_with_missing_columns(tmp_path):
    (tmp_path / "bad.csv").write_text("id,text\n1,x\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['file_name'"):
        read_clotho(tmp_path / "bad.csv", tmp_path)


def test_videoinstruct_json(tmp_path):
    _video(tmp_path / "v_abc.mkv")
    (tmp_path / "videoinstruct.json").write_text(json.dumps([{"video_id": "v_abc", "q": "What happens?", "a": "A dog runs."}]))
    (example,) = read_videoinstruct(tmp_path / "videoinstruct.json", tmp_path)
    assert example.media == tmp_path / "v_abc.mkv" and example.answer == "A dog runs."


def test_video_chatgpt_files(tmp_path):
    (tmp_path / "generic_qa.json").write_text(json.dumps([{"Q": "Describe it.", "A": "A cat.", "video_name": "v_1"}]))
    (tmp_path / "consistency_qa.json").write_text(json.dumps([{"Q1": "Who?", "Q2": "Which person?", "A": "A man.", "video_name": "v_2"}]))
    (generic,) = read_video_chatgpt(tmp_path / "generic_qa.json", tmp_path)
    assert generic.kind == "generic_qa" and generic.media.name == "v_1.mp4"
    q1, q2 = read_video_chatgpt(tmp_path / "consistency_qa.json", tmp_path)
    assert (q1.question, q2.question, q1.answer) == ("Who?", "Which person?", "A man.")
    assert q1.id.endswith("/q1") and q2.id.endswith("/q2")
    (tmp_path / "bad.json").write_text(json.dumps([{"A": "x", "video_name": "v"}]))
    with pytest.raises(DataError, match=r"bad.json\[0\]: neither a 'Q' nor"):
        read_video_chatgpt(tmp_path / "bad.json", tmp_path)


def test_activitynet_qa(tmp_path):
    (tmp_path / "test_q.json").write_text(json.dumps([{"question": "what is the man doing", "question_id": "v_x_1", "video_name": "x"}]))
    (tmp_path / "test_a.json").write_text(json.dumps([{"answer": "skiing", "question_id": "v_x_1", "type": 2}]))
    (example,) = read_activitynet_qa(tmp_path / "test_q.json", tmp_path / "test_a.json", tmp_path)
    assert example.question == "what is the man doing" and example.answer == "skiing"  # as the dataset gives it
    assert example.media.name == "v_x.mp4"
    (tmp_path / "test_a.json").write_text(json.dumps([]))
    with pytest.raises(DataError, match="has no answer"):
        read_activitynet_qa(tmp_path / "test_q.json", tmp_path / "test_a.json", tmp_path)
    (tmp_path / "test_a.json").write_text(json.dumps([{"answer": "skiing", "question_id": "v_x_1", "type": 2}]))
    (tmp_path / "test_q.json").write_text(json.dumps([{"question": "  ", "question_id": "v_x_1", "video_name": "x"}]))
    with pytest.raises(DataError, match=r"test_q.json\[0\]: question 'v_x_1' is empty"):
        read_activitynet_qa(tmp_path / "test_q.json", tmp_path / "test_a.json", tmp_path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_videoinstruct(tmp_path / "nope.json", tmp_path)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DataError, match="not valid JSON"):
        read_videoinstruct(tmp_path / "broken.json", tmp_path)
    (tmp_path / "fields.json").write_text(json.dumps([{"video": "a"}]))
    with pytest.raises(DataError, match=r"missing field\(s\) \['video_id', 'q', 'a'\]"):
        read_videoinstruct(tmp_path / "fields.json", tmp_path)
    with pytest.raises(DataError, match="build the corpus"):
        read_corpus_split(tmp_path, "speech_to_text")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    profile = synth.Profile(train_clips=4, val_clips=1, test_clips=3, speech_clips=2, sound_clips=2, images=2)
    synth.build(profile, out, seed=2, workers=1, progress=False)
    return out


def test_every_corpus_split_reads_and_loads(corpus):
    for name in ("speech_to_text", "audio_captions", "image_captions", "video_instructions_train", "video_instructions_val"):
        examples = read_corpus_split(corpus, name)
        assert examples and all(e.media.is_file() for e in examples)
    aware = read_qa_benchmark(corpus / "benchmarks" / "audio_aware" / "qa.json", corpus / "clips")
    assert {e.needs for e in aware} == {"audio", "visual", "audio-visual"}


def test_media_dataset_and_collate_make_model_inputs(corpus, make_model):
    model = make_model()
    examples = (read_corpus_split(corpus, "video_instructions_train")[:2] + read_corpus_split(corpus, "speech_to_text")[:1]
                + read_corpus_split(corpus, "image_captions")[:1])
    dataset = MediaDataset(examples, num_frames=2, frame_size=32)
    items = [dataset[i] for i in range(len(dataset))]
    assert items[0]["frames"].shape == (2, 32, 32, 3)
    assert items[2]["frames"] is None and items[2]["audio"].ndim == 1  # speech file: audio only
    assert items[3]["frames"].shape == (1, 32, 32, 3) and items[3]["audio"] is None  # image
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=lambda b: collate_media(b, model))
    batch = next(iter(loader))
    assert batch["ids"] == [e.id for e in examples]
    out = model(batch["input_ids"], batch["attention_mask"], batch["video_features"], batch["audio_features"], batch["labels"])
    assert torch.isfinite(out.loss)
    assert batch["audio_features"][3] is None and batch["video_features"][2] is None
    twin = make_model(use_audio=False)
    def refuse_sound(audios):  # the twin reads no audio: its encoder must not be given any
        assert all(audio is None for audio in audios)
        return [None] * len(audios)

    twin.audio_encoder.forward = refuse_sound
    deaf = collate_media(items, twin)
    assert deaf["audio_features"] == [None] * 4 and (deaf["input_ids"] == twin.audio_token_id).sum() == 0
    assert all(torch.equal(a, b) for a, b in zip(deaf["video_features"][:2], batch["video_features"][:2]))


def test_bad_image_is_a_media_error(tmp_path):
    from avlib.datasets import load_media

    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(MediaError, match="x.png"):
        load_media(tmp_path / "x.png", 1, None)
    Image.new("RGB", (10, 6)).save(tmp_path / "ok.png")
    frames, audio = load_media(tmp_path / "ok.png", 1, 16)
    assert frames.shape == (1, 16, 16, 3) and audio is None


def test_a_benchmark_file_whose_top_level_is_an_object_says_so(tmp_path):
    (tmp_path / "generic_qa.json").write_text(json.dumps({"data": [{"Q": "q", "A": "a", "video_name": "v"}]}))
    with pytest.raises(DataError, match="generic_qa.json: expected a list of records at the top level, got a dict"):
        read_video_chatgpt(tmp_path / "generic_qa.json", tmp_path)
