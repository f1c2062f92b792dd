from pathlib import Path
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from avlib.datasets import load_media, read_corpus_split
from avlib.features import FeatureCache, FeatureDataset, StaleFeatures, corpus_media, extract, spec_for
from avlib.foundation import load_foundation_model

DDP_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "cpu_ddp.yaml"


@pytest.fixture(scope="module")
def model(small_params, small_foundation):
    return load_foundation_model(small_params, small_foundation)


def _spec(model, small_params):
    return spec_for(model, small_params.model.vision.num_frames, 32, small_params.model.vision.feature_layer)


def test_the_key_covers_weights_and_every_preprocessing_parameter(model, small_params):
    spec = _spec(model, small_params)
    keys = {spec.key}
    for field, value in [("num_frames", 8), ("frame_size", 64), ("window_seconds", 30.0), ("num_audio_tokens", 64),
                         ("n_mels", 128), ("feature_layer", -1), ("sample_rate", 8000)]:
        keys.add(dataclasses.replace(spec, **{field: value}).key)
    assert len(keys) == 8
    weight = model.audio_encoder.encoder.ln_post.weight
    original = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1e-3)
    try:
        assert _spec(model, small_params).key != spec.key  # other weights, other cache
    finally:
        with torch.no_grad():
            weight.copy_(original)
    assert _spec(model, small_params).key == spec.key


def test_cached_features_equal_features_from_raw_media(model, small_params, small_corpus, tmp_path):
    cache = FeatureCache(tmp_path, _spec(model, small_params), small_corpus)
    media = corpus_media(small_corpus)
    assert extract(model, media, cache, batch_size=5, shard_size=7, progress=False) == len(media)
    summary = cache.summary()
    clips = json.loads((small_corpus / "clips.json").read_text())
    assert summary["items"] == len(media) and summary["shards"] == -(-len(media) // 7)
    assert summary["without_audio"] == sum(not c["has_audio"] for c in clips) + 4  # + the four images
    assert summary["multi_window_audio"] == sum(c["duration"] > 4 for c in clips)

    examples = read_corpus_split(small_corpus, "video_instructions_train")
    dataset = FeatureDataset(examples, cache)
    for example, item in list(zip(examples, dataset))[:6]:
        frames, audio = load_media(example.media, 4, 32)
        video_raw, audio_raw = model.encode_media([frames], [audio])
        torch.testing.assert_close(item["video_features"], video_raw[0], rtol=1e-5, atol=1e-6)
        if audio is None:
            assert item["audio_features"] is None and audio_raw[0] is None
        else:
            torch.testing.assert_close(item["audio_features"], audio_raw[0], rtol=1e-5, atol=1e-6)


def test_an_interrupted_extraction_resumes(model, small_params, small_corpus, tmp_path):
    cache = FeatureCache(tmp_path, _spec(model, small_params), small_corpus)
    media = corpus_media(small_corpus)
    extract(model, media[:5], cache, shard_size=3, progress=False)
    (cache.folder / ".shard-00-00009.safetensors.tmp").write_bytes(b"half a shard")  # a crash mid-write
    assert extract(model, media, cache, shard_size=3, progress=False) == len(media) - 5
    assert extract(model, media, cache, progress=False) == 0
    assert len(cache.entries()) == len(media)


def test_stale_or_missing_features_are_never_read(model, small_params, small_corpus, tmp_path):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(small_corpus, corpus)
    cache = FeatureCache(tmp_path / "features", _spec(model, small_params), corpus)
    examples = read_corpus_split(corpus, "speech_to_text")
    with pytest.raises(KeyError, match="have no cached features"):
        FeatureDataset(examples, cache)
    extract(model, [e.media for e in examples], cache, progress=False)
    FeatureDataset(examples, cache)
    with examples[0].media.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(StaleFeatures, match="changed after its features were cached"):
        FeatureDataset(examples, cache)


@pytest.mark.slow
def test_two_processes_fill_one_index(small_params, small_corpus, small_foundation, tmp_path):
    from avlib.config import save_config

    save_config(small_params, tmp_path, "params.yaml")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG), "-m", "avlib.stages", "extract",
               "--params", str(tmp_path / "params.yaml"), "--data", str(small_corpus),
               "--foundation", str(small_foundation), "--out", str(tmp_path / "features")]
    subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True, timeout=600)
    model = load_foundation_model(small_params, small_foundation)
    cache = FeatureCache(tmp_path / "features", _spec(model, small_params), small_corpus)
    assert sorted(p.name for p in cache.folder.glob("index-*.jsonl")) == ["index-00.jsonl", "index-01.jsonl"]
    assert len(cache.entries()) == len(corpus_media(small_corpus))
    single = FeatureCache(tmp_path / "single", _spec(model, small_params), small_corpus)
    extract(model, corpus_media(small_corpus), single, progress=False)
    for media, entry in cache.entries().items():
        for a, b in zip(cache.load(entry), single.load(single.entries()[media])):
            assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5)


def _extract_in_child(model, media, root, spec, corpus, rank, world_size):
    torch.set_num_threads(1)
    extract(model, media, FeatureCache(root, spec, corpus), batch_size=4, shard_size=3, rank=rank,
            world_size=world_size, progress=False)


def _run_together(jobs):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_extract_in_child, args=job) for job in jobs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0, f"an extraction process failed (exit code {process.exitcode})"


def _index_lines(folder: Path) -> list[str]:
    return [line for index in folder.glob("index-*.jsonl") for line in index.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_concurrent_extractions_race_on_nothing_and_encode_nothing_twice(model, small_params, small_corpus, tmp_path):
    """Two ranks of one extraction 20 times over, then two whole extractions into one folder 5 times over."""
    spec, media = _spec(model, small_params), corpus_media(small_corpus)
    for round_ in range(25):
        root = tmp_path / f"round{round_}"
        world = 2 if round_ < 20 else 1  # two ranks of one run, or two runs of one rank each
        _run_together([(model, media, root, spec, small_corpus, rank if world == 2 else 0, world) for rank in range(2)])
        cache = FeatureCache(root, spec, small_corpus)
        lines = _index_lines(cache.folder)
        assert len(lines) == len(media), f"round {round_}: {len(lines)} index lines for {len(media)} media"
        assert set(cache.entries()) == {cache.relative(m) for m in media}
        assert not list(cache.folder.glob("*.tmp")) and not list(cache.folder.glob(".*.tmp"))
        for entry in cache.entries().values():
            video, audio = cache.load(entry)  # every line points at a shard that holds its tensors
            assert video is not None or audio is not None


def test_a_torn_last_index_line_is_ignored_reported_and_cut(model, small_params, small_corpus, tmp_path):
    cache = FeatureCache(tmp_path, _spec(model, small_params), small_corpus)
    media = corpus_media(small_corpus)
    extract(model, media[:4], cache, shard_size=2, progress=False)
    index = cache.folder / "index-00.jsonl"
    with index.open("a") as handle:  # a crash in the middle of an append
        handle.write('{"media": "clips/half')
    reopened = FeatureCache(tmp_path, _spec(model, small_params), small_corpus)
    assert len(reopened.entries()) == 4
    with pytest.warns(UserWarning, match="index-00.jsonl: ignoring a torn last line"):
        assert extract(model, media[:6], reopened, progress=False) == 2
    assert len(_index_lines(cache.folder)) == 6
    assert len(FeatureCache(tmp_path, _spec(model, small_params), small_corpus).entries()) == 6
