"""A damaged stored part is an error naming the file and the fix, never used (bit flips, truncation)."""

import json
import os

import pytest

from avlib.features import FeatureCache, FeatureDataset, corpus_media, extract, spec_for
from avlib.foundation import load_foundation_model
from avlib.integrity import DamagedFile
from avlib.datasets import read_corpus_split


def flip_a_byte(path, offset=-10):
    """Change one byte and keep the file's date, as a disk error would."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_damaged_trained_part_is_refused(make_model, tmp_path):
    model = make_model()
    model.configure_training("pretrain_audio")
    model.save_trained(tmp_path)
    assert set(json.loads((tmp_path / "parts.json").read_text())["sha256"]) == {"audio_projector.safetensors"}
    make_model().load_trained(tmp_path)  # intact: loads
    flip_a_byte(tmp_path / "audio_projector.safetensors")
    with pytest.raises(DamagedFile, match=r"audio_projector.safetensors: damaged .*dvc repro -f"):
        make_model().load_trained(tmp_path)


def test_trained_parts_written_before_digests_still_load(make_model, tmp_path):
    model = make_model()
    model.configure_training("pretrain_audio")
    model.save_trained(tmp_path)
    (tmp_path / "parts.json").write_text(json.dumps(["audio_projector"]))
    assert make_model().load_trained(tmp_path) == ["audio_projector"]


def test_damaged_foundation_weights_are_refused(small_params, small_foundation, tmp_path):
    import shutil

    copy = tmp_path / "foundation"
    shutil.copytree(small_foundation, copy)
    load_foundation_model(small_params, copy)
    weights = next((copy / "siglip").glob("*.safetensors"))
    flip_a_byte(weights, offset=len(weights.read_bytes()) // 2)
    with pytest.raises(DamagedFile, match=r"siglip: damaged .*dvc repro -f encoders"):
        load_foundation_model(small_params, copy)


def test_a_damaged_feature_shard_is_refused(small_params, small_foundation, small_corpus, tmp_path):
    model = load_foundation_model(small_params, small_foundation)
    spec = spec_for(model, small_params.model.vision.num_frames, 32, small_params.model.vision.feature_layer)
    cache = FeatureCache(tmp_path, spec, small_corpus)
    extract(model, corpus_media(small_corpus), cache, progress=False)
    examples = read_corpus_split(small_corpus, "video_instructions_train")
    FeatureDataset(examples, cache)[0]
    flip_a_byte(next(cache.folder.glob("shard-*.safetensors")))
    with pytest.raises(DamagedFile, match=r"shard-00-00000.safetensors: damaged .*dvc repro -f encoders"):
        FeatureDataset(examples, FeatureCache(tmp_path, spec, small_corpus))[0]
