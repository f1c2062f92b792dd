import json

import numpy as np
import open_clip
import pytest
import torch
import whisper
from transformers import AutoTokenizer, PhiForCausalLM

from avlib import foundation as fd
from avlib import recipes, synth
from avlib.vision_encoder import register_open_clip_config


def test_missing_corpus_says_how_to_get_it(tmp_path):
    with pytest.raises(fd.MissingData, match=r"python -m avlib.synth --profile tiny --seed 0 --out .*dvc pull"):
        fd.require_corpus(tmp_path)


def test_corpus_text_is_in_the_chat_template(small_corpus):
    texts = recipes.corpus_texts(small_corpus, "train")
    assert any(t.startswith(recipes.SYSTEM) and " ASSISTANT: " in t for t in texts)
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
    assert recipes.edit_distance("a b c".split(), "a x c".split()) == 1
    assert recipes.edit_distance([], ["a", "b"]) == 2
    assert recipes.edit_distance("the word is apple".split(), "the word is apple".split()) == 0


class ScriptedWhisper:
    """A stand-in with Whisper's encoder/decoder calls: item i's decoder scores its script's next token highest."""

    def __init__(self, scripts: list[list[int]], vocab: int):
        self.scripts, self.vocab, self.calls = scripts, vocab, 0
        self.encoder = lambda mels: mels[:, 0, :1]  # each item's index, carried from its mel

    def decoder(self, tokens, encoded):
        self.calls += 1
        logits = torch.zeros(len(tokens), tokens.shape[1], self.vocab)
        for row, index in enumerate(encoded[:, 0].long().tolist()):
            script = self.scripts[index]
            position = tokens.shape[1] - 1
            best = script[position] if position < len(script) else 0
            logits[row, -1, best] = 2.0
            logits[row, -1, (best + 1) % self.vocab] = 1.0  # the runner-up: greedy never takes it
        return logits


def test_transcribe_decodes_greedily_item_by_item_and_stops_at_the_end_of_turn(small_foundation):
    tokenizer = AutoTokenizer.from_pretrained(small_foundation / fd.TOKENIZER_DIR)
    eot = tokenizer.convert_tokens_to_ids(recipes.END_OF_TURN)
    words = ["the speaker says apple", "three beeps", "a voice says tiger and then a siren"]
    scripts = [tokenizer.encode(w, add_special_tokens=False) + [eot] for w in words]
    max_len = max(len(s) for s in scripts) + 1
    endless = tokenizer.encode(" ".join(["apple"] * 40), add_special_tokens=False)
    assert len(endless) > max_len
    scripts.append(endless)  # never says it is done
    count = 130  # more than one batch of 128
    mels = torch.arange(count, dtype=torch.float)[:, None, None].expand(count, 2, 3) % len(scripts)
    model = ScriptedWhisper(scripts, len(tokenizer))
    texts = recipes.transcribe(model, mels, tokenizer, max_len=max_len)
    expected = [tokenizer.decode(s[: s.index(eot)] if eot in s else s[: max_len - 1]).strip() for s in scripts]
    assert len(texts) == count and texts == [expected[i % len(scripts)] for i in range(count)]
    assert expected[:3] == words and expected[3] == tokenizer.decode(endless[: max_len - 1]).strip(), "cut at max_len - 1 tokens"


def test_siglip_recall_counts_exact_caption_matches():
    class Perfect(torch.nn.Module):  # image i and caption i share a one-hot embedding
        def encode_text(self, ids):
            return torch.nn.functional.one_hot(ids[:, 0], 4).float()

        def encode_image(self, pixels):
            return torch.nn.functional.one_hot(pixels[:, 0, 0, 0].long(), 4).float()

    images = torch.tensor([0, 1, 2, 1]).view(4, 1, 1, 1)
    captions = ["a", "b", "c", "b"]
    texts = torch.tensor([[0], [1], [2], [1]])
    scores = recipes.evaluate_siglip(Perfect(), lambda x: x, images, captions, texts)
    assert scores["recall_at_1"] == 1.0 and scores["candidates"] == 3


def test_frame_labels_say_which_patches_the_shape_covers_and_where_it_is():
    facts = synth.Facts("x", "square", "red", "navy", "right", 4.0, False, radius=0.2, lateral=0.5)
    start, end = recipes._frame_labels(facts, 0.0, 64, 8), recipes._frame_labels(facts, 1.0, 64, 8)
    assert (start["column"], start["row"], end["column"], end["row"]) == (0, 2, 3, 2), "left to right, mid-height"
    square = 1 + synth.SHAPES.index("square")
    grid = start["patches"].reshape(8, 8)
    frame = np.zeros((64, 64, 3), np.uint8)
    synth.draw_shape(frame, "square", (255, 255, 255), *(v * 64 for v in facts.center(0.0)), 0.2 * 64)
    covered = frame[..., 0].reshape(8, 8, 8, 8).mean(axis=(1, 3)) > 127
    assert covered.sum() >= 4 and ((grid == square) == covered).all() and set(np.unique(grid)) == {0, square}
    unplaced = recipes._frame_labels(facts, None, 64, 8)  # an image of the caption split: no place known
    assert unplaced["column"] == unplaced["row"] == -100 and (unplaced["patches"] == -100).all()
    assert unplaced["shape"] == synth.SHAPES.index("square") and unplaced["background"] == list(synth.BACKGROUNDS).index("navy")


def test_frame_heads_read_the_feature_block_and_let_go_of_the_trunk(small_params):
    clip = recipes.build_tiny_siglip(small_params.model)
    trunk = clip.visual.trunk
    seen = []
    trunk.blocks[1].register_forward_hook(lambda module, inputs, output: seen.append(output))
    heads = recipes.FrameHeads(trunk, 1)
    size = small_params.model.tiny.image_size
    pixels = torch.randn(3, 3, size, size)
    clip.encode_image(pixels)
    assert torch.equal(heads.pooled, seen[-1].mean(dim=1)), "the per-frame mean of block 1, as a temporal token"
    patches = trunk.patch_embed.num_patches
    labels = {n: torch.zeros(3, dtype=torch.long) for n in recipes.FRAME_HEADS}
    labels["patches"] = torch.full((3, patches), -100)
    labels["patches"][:, 0] = 1
    loss = heads.loss(labels)
    weighted = recipes.FrameHeads(trunk, 1, shape_weight=3.0, colour_weight=0.1)
    weighted.load_state_dict(heads.state_dict())
    clip.encode_image(pixels)
    ce = {n: torch.nn.functional.cross_entropy(heads.heads[n](heads.pooled), labels[n]) for n in recipes.FRAME_HEADS}
    expected = 2 * ce["shape"] - 0.9 * (ce["color"] + ce["background"])
    assert torch.allclose(weighted.loss(labels) - heads.loss(labels), expected), "shape weighed 3, the colours 0.1"
    weighted.hook.remove()
    loss.backward()
    assert torch.isfinite(loss) and heads.patch_head.weight.grad.abs().sum() > 0 and trunk.blocks[0].mlp.fc1.weight.grad is not None
    accuracy = heads.accuracy(clip, pixels, {n: torch.tensor([0, -100, 0]) for n in recipes.FRAME_HEADS})
    assert set(accuracy) == set(recipes.FRAME_HEADS) and all(a in (0.0, 0.5, 1.0) for a in accuracy.values())
    heads.hook.remove()
    heads.tokens = None
    clip.encode_image(pixels)
    assert heads.tokens is None, "after training the trunk no longer feeds the heads"


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
