import json

import open_clip
import pytest
import torch
import whisper
from transformers import AutoTokenizer, PhiForCausalLM

from avlib import foundation as fd
from avlib.vision_encoder import register_open_clip_config


def test_missing_corpus_says_how_to_get_it(tmp_path):
    with pytest.raises(fd.MissingData, match=r"python -m avlib.synth --profile tiny --seed 0 --out .*dvc pull"):
        fd.require_corpus(tmp_path)


def test_corpus_text_is_in_the_chat_template(small_corpus):
    texts = fd.corpus_texts(small_corpus, "train")
    assert any(t.startswith(fd.SYSTEM) and " ASSISTANT: " in t for t in texts)
    assert all(t.endswith("<|endoftext|>") for t in texts)


def test_foundation_models_are_saved_in_their_libraries_formats(small_foundation, small_params):
    manifest = json.loads((small_foundation / fd.MANIFEST).read_text())
    assert set(manifest["checkpoints"]) == {"tokenizer", "whisper", "siglip", "phi"}
    for entry in manifest["checkpoints"].values():
        assert entry["sha256"] == fd.digest(small_foundation / entry["path"])
    scores = manifest["scores"]
    assert {"wer", "word_accuracy"} <= set(scores["whisper"]) and "recall_at_1" in scores["siglip"]
    assert scores["phi"]["perplexity"] > 1 and scores["phi"]["chance_perplexity"] > 100

    speech = whisper.load_model(str(small_foundation / fd.WHISPER_FILE), device="cpu")
    assert speech.dims.n_audio_ctx == 200 and speech.dims.n_audio_state == 32
    config = json.loads((small_foundation / fd.SIGLIP_DIR / "open_clip_config.json").read_text())
    register_open_clip_config(config["model_cfg"])
    clip = open_clip.create_model(f"local-dir:{small_foundation / fd.SIGLIP_DIR}")
    assert clip.visual.trunk.embed_dim == 32
    phi = PhiForCausalLM.from_pretrained(small_foundation / fd.PHI_DIR)
    tokenizer = AutoTokenizer.from_pretrained(small_foundation / fd.TOKENIZER_DIR)
    assert phi.config.vocab_size == len(tokenizer)


def test_the_avlm_stands_on_the_foundation(small_foundation, small_params):
    model = fd.load_foundation_model(small_params, small_foundation)
    saved = whisper.load_model(str(small_foundation / fd.WHISPER_FILE), device="cpu").encoder
    for name, value in saved.state_dict().items():
        assert torch.equal(model.audio_encoder.encoder.state_dict()[name], value)
    assert model.vision_encoder.num_patches == 16 and model.audio_encoder.width == 32


def test_load_foundation_without_stage_one(small_params, tmp_path):
    with pytest.raises(fd.MissingData, match="run stage 1 first"):
        fd.load_foundation_model(small_params, tmp_path)


def test_edit_distance_and_wer():
    assert fd.edit_distance("a b c".split(), "a x c".split()) == 1
    assert fd.edit_distance([], ["a", "b"]) == 2
    assert fd.edit_distance("the word is apple".split(), "the word is apple".split()) == 0


def test_transcribe_decodes_greedily(small_foundation, small_corpus, small_params):
    speech = whisper.load_model(str(small_foundation / fd.WHISPER_FILE), device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(small_foundation / fd.TOKENIZER_DIR)
    items = fd.audio_examples(small_corpus, 4.0, "test")
    mels = fd._mels(items, 4.0, 80, "test")
    texts = fd.transcribe(speech, mels, tokenizer, max_len=8)
    assert len(texts) == len(items) and all(isinstance(t, str) for t in texts)


def test_siglip_recall_counts_exact_caption_matches():
    class Perfect(torch.nn.Module):  # image i and caption i share a one-hot embedding
        def encode_text(self, ids):
            return torch.nn.functional.one_hot(ids[:, 0], 4).float()

        def encode_image(self, pixels):
            return torch.nn.functional.one_hot(pixels[:, 0, 0, 0].long(), 4).float()

    images = torch.tensor([0, 1, 2, 1]).view(4, 1, 1, 1)
    captions = ["a", "b", "c", "b"]
    texts = torch.tensor([[0], [1], [2], [1]])
    scores = fd.evaluate_siglip(Perfect(), lambda x: x, images, captions, texts)
    assert scores["recall_at_1"] == 1.0 and scores["candidates"] == 3


def test_a_corpus_of_another_profile_is_refused(small_corpus, small_params):
    import dataclasses

    other = dataclasses.replace(small_params.corpus, profile="tiny", seed=0)
    with pytest.raises(fd.MissingData, match=r"holds the small corpus \(seed 1\), but params.yaml asks for tiny \(seed 0\)"):
        fd.require_corpus(small_corpus, other)
    assert fd.require_corpus(small_corpus, small_params.corpus) == small_corpus


def test_the_projectors_start_from_the_seed_in_every_process(small_foundation, small_params):
    import subprocess
    import sys

    code = (
        "import hashlib, torch; from avlib.config import Params, from_dict; import yaml, sys;"
        "from avlib.foundation import load_foundation_model;"
        "p = from_dict(Params, yaml.safe_load(sys.stdin.read())); torch.rand(int(sys.argv[2]));"
        "m = load_foundation_model(p, sys.argv[1]);"
        "print(hashlib.sha256(b''.join(t.numpy().tobytes() for t in m.audio_projector.state_dict().values())).hexdigest())"
    )
    import dataclasses

    import yaml

    text = yaml.safe_dump(dataclasses.asdict(small_params))
    runs = {subprocess.run([sys.executable, "-c", code, str(small_foundation), str(draws)], input=text, text=True,
                           capture_output=True, check=True).stdout.strip() for draws in (1, 7)}
    assert len(runs) == 1  # random numbers drawn before loading change nothing
