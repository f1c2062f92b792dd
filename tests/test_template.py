import pytest
import torch

from avlib.template import (
    AUDIO_TOKEN,
    IGNORE_INDEX,
    SYSTEM,
    VIDEO_TOKEN,
    collate,
    encode,
    end_of_turn_id,
    media_token_ids,
    render_prompt,
    TooLong,
)
from avlib.tokenizer import train_tokenizer


def test_prompt_follows_the_bunny_template():
    assert render_prompt("What is said?", has_video=True, has_audio=True) == (
        f"{SYSTEM} USER: <video>\n<audio>\nWhat is said? ASSISTANT:"
    )
    assert render_prompt("Q", has_video=True, has_audio=False) == f"{SYSTEM} USER: <video>\nQ ASSISTANT:"


def test_audio_first_puts_the_audio_line_before_the_video_line():
    assert render_prompt("Q", has_video=True, has_audio=True, media_order="audio_first") == (
        f"{SYSTEM} USER: <audio>\n<video>\nQ ASSISTANT:"
    )
    # one modality alone renders the same either way
    for has_video, has_audio in ((True, False), (False, True)):
        assert render_prompt("Q", has_video, has_audio, "audio_first") == render_prompt("Q", has_video, has_audio, "video_first")
    with pytest.raises(ValueError, match="media_order must be one of video_first, audio_first, got 'sideways'"):
        render_prompt("Q", media_order="sideways")


def test_audio_first_moves_the_slots_and_nothing_else(tokenizer):
    video_id, audio_id = media_token_ids(tokenizer)
    first, first_labels = encode(tokenizer, "what does the speaker say", "apple", 7, 5, media_order="video_first")
    ids, labels = encode(tokenizer, "what does the speaker say", "apple", 7, 5, media_order="audio_first")
    audio = [i for i, t in enumerate(ids) if t == audio_id]
    video = [i for i, t in enumerate(ids) if t == video_id]
    assert audio == list(range(audio[0], audio[0] + 5)) and video == list(range(video[0], video[0] + 7))
    assert audio[-1] < video[0]  # the audio line, then the video line
    assert sorted(ids) == sorted(first) and labels == first_labels  # the same tokens and supervision, reordered
    # truncation keeps every media slot, in that order
    cut, _ = encode(tokenizer, "what does the speaker say " * 20, "apple " * 20, 7, 5, max_length=len(ids), media_order="audio_first")
    assert len(cut) == len(ids) and cut[: video[-1] + 1] == ids[: video[-1] + 1]
    batch = collate([{"question": "what is said", "answer": "apple", "video_features": torch.zeros(7, 4),
                      "audio_features": torch.zeros(5, 4)}], tokenizer, media_order="audio_first")
    row = batch["input_ids"][0].tolist()
    assert row.index(audio_id) < row.index(video_id)


def test_placeholders_expand_to_exact_counts(tokenizer):
    video_id, audio_id = media_token_ids(tokenizer)
    ids, _ = encode(tokenizer, "what does the speaker say", "apple", num_video_tokens=7, num_audio_tokens=5)
    assert ids.count(video_id) == 7 and ids.count(audio_id) == 5
    # each modality's slots are contiguous, video before audio
    first_audio = ids.index(audio_id)
    assert ids[ids.index(video_id) : ids.index(video_id) + 7] == [video_id] * 7
    assert ids[first_audio : first_audio + 5] == [audio_id] * 5 and first_audio > ids.index(video_id)


def test_only_the_answer_and_end_of_turn_are_supervised(tokenizer):
    video_id, audio_id = media_token_ids(tokenizer)
    ids, labels = encode(tokenizer, "how many beeps are there", "three beeps", num_video_tokens=4, num_audio_tokens=3)
    supervised = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert supervised == list(range(supervised[0], len(ids)))  # one block at the end
    assert tokenizer.decode([ids[i] for i in supervised]) == " three beeps<|endoftext|>"
    assert ids[-1] == end_of_turn_id(tokenizer)
    for i, token in enumerate(ids):
        if token in (video_id, audio_id):
            assert labels[i] == IGNORE_INDEX
    prompt = tokenizer.decode(ids[: supervised[0]])
    assert prompt.endswith("how many beeps are there ASSISTANT:")


def test_no_audio_means_no_audio_line(tokenizer):
    _, audio_id = media_token_ids(tokenizer)
    ids, _ = encode(tokenizer, "q", "a", num_video_tokens=3, num_audio_tokens=0)
    assert audio_id not in ids
    assert AUDIO_TOKEN not in tokenizer.decode(ids)
    assert "USER: " + VIDEO_TOKEN * 3 + "\nq ASSISTANT:" in tokenizer.decode(ids)


def test_open_prompt_for_generation(tokenizer):
    ids, labels = encode(tokenizer, "q", None, num_video_tokens=2, num_audio_tokens=0)
    assert set(labels) == {IGNORE_INDEX}
    assert tokenizer.decode(ids).endswith("q ASSISTANT:")


def test_text_cannot_smuggle_placeholders(tokenizer):
    with pytest.raises(ValueError, match="must not contain"):
        encode(tokenizer, "what is <audio>?", "x", 1, 0)


def test_tokenizer_without_media_tokens_is_rejected():
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel()
    plain = PreTrainedTokenizerFast(tokenizer_object=core)
    with pytest.raises(ValueError, match="add_media_tokens"):
        media_token_ids(plain)


def test_collate_pads_right_for_training_and_left_for_generation(tokenizer):
    samples = [
        {"question": "which shape moves first", "answer": "the red circle", "video_features": torch.zeros(3, 8), "audio_features": torch.zeros(2, 6)},
        {"question": "q", "answer": "a", "video_features": torch.zeros(1, 8), "audio_features": None},
    ]
    batch = collate(samples, tokenizer)
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][1, : lengths[1]].all() and not batch["attention_mask"][1, lengths[1] :].any()
    assert (batch["labels"][1, lengths[1] :] == IGNORE_INDEX).all()
    assert batch["audio_features"][1] is None and len(batch["video_features"]) == 2

    prompts = collate(samples, tokenizer, with_answers=False)
    lengths = prompts["attention_mask"].sum(1)
    width = prompts["input_ids"].shape[1]
    assert prompts["attention_mask"][1, width - lengths[1] :].all() and not prompts["attention_mask"][1, : width - lengths[1]].any()


def test_vision_only_collate_drops_audio(tokenizer):
    sample = {"question": "q", "answer": "a", "video_features": torch.zeros(3, 8), "audio_features": torch.zeros(2, 6)}
    no_track = {**sample, "audio_features": None}
    vision_only = collate([sample], tokenizer, use_audio=False)
    assert torch.equal(vision_only["input_ids"], collate([no_track], tokenizer)["input_ids"])
    assert vision_only["audio_features"] == [None]


def test_audio_only_samples_have_no_video_line(tokenizer):
    video_id, audio_id = media_token_ids(tokenizer)
    batch = collate([{"question": "transcribe", "answer": "apple", "video_features": None, "audio_features": torch.zeros(4, 6)}], tokenizer)
    ids = batch["input_ids"][0].tolist()
    assert video_id not in ids and ids.count(audio_id) == 4


def test_tokenizer_vocabulary_floor():
    with pytest.raises(ValueError, match="vocab_size must be at least 259"):
        train_tokenizer(["a"], vocab_size=100)


def test_long_text_is_cut_from_the_end_and_media_slots_never(tokenizer):
    video_id, audio_id = media_token_ids(tokenizer)
    question, answer = "what does the speaker say " * 6, "the speaker says apple " * 30
    question_for_generation = question * 8
    full, _ = encode(tokenizer, question, answer, num_video_tokens=6, num_audio_tokens=4)
    assert len(full) > 260
    ids, labels = encode(tokenizer, question, answer, num_video_tokens=6, num_audio_tokens=4, max_length=260)
    assert len(ids) == len(labels) == 260 and ids.count(video_id) == 6 and ids.count(audio_id) == 4
    assert all(labels[i] == IGNORE_INDEX for i, t in enumerate(ids) if t in (video_id, audio_id))
    # the question keeps its start, the assistant's turn is still there, the answer is cut first
    prompt = tokenizer.decode([t for t in ids if t not in (video_id, audio_id)])
    assert "USER:" in prompt and "ASSISTANT:" in prompt and prompt.split("ASSISTANT:")[1].strip().startswith("the speaker")
    generation, _ = encode(tokenizer, question_for_generation, None, num_video_tokens=6, num_audio_tokens=4, max_length=260)
    assert len(generation) == 260 and tokenizer.decode(generation).endswith("ASSISTANT:")
    # short samples are laid out exactly as without a limit
    assert encode(tokenizer, "q", "a", 6, 4, max_length=260) == encode(tokenizer, "q", "a", 6, 4)


def test_media_that_cannot_fit_is_an_error_naming_both_lengths(tokenizer):
    with pytest.raises(TooLong, match=r"take \d+ tokens, more than model.max_length 50"):
        encode(tokenizer, "what is said", "apple", num_video_tokens=40, num_audio_tokens=20, max_length=50)


def test_collate_drops_audio_windows_past_the_limit_and_counts_what_it_cut(tokenizer):
    _, audio_id = media_token_ids(tokenizer)
    samples = [{"question": "what is said " * 50, "answer": "apple", "video_features": torch.zeros(3, 8),
                "audio_features": torch.zeros(5 * 4, 8)},
               {"question": "what is said", "answer": "apple", "video_features": torch.zeros(3, 8), "audio_features": torch.zeros(4, 8)}]
    batch = collate(samples, tokenizer, max_length=190, max_audio_windows=2, audio_tokens_per_window=4)
    assert batch["dropped_audio_windows"] == 3 and batch["cut_samples"] == 1
    assert batch["audio_features"][0].shape == (8, 8) and (batch["input_ids"][0] == audio_id).sum() == 8
    assert batch["input_ids"].shape[1] == 190
