"""The real-data path end to end: official download layouts -> `avlib.prepare` -> `dvc repro` on paper-smoke.

Every source prepare reads is built in its official layout with real encodings
(tests/real_layouts.py); each README `python -m avlib.prepare ...` command runs
as written, with ~/downloads pointing at those folders; then the paper profile's
pipeline runs with miniature models, in a copy of the repository.
"""

import json
import re
import shlex
import sys
import time

import pytest

from real_layouts import build_downloads
from test_pipeline import BIN, REPO, _copy_repository, _finite, sh


def readme_prepare_commands() -> list[list[str]]:
    """The README's real-data commands, as argument lists."""
    lines = [line.strip() for line in (REPO / "README.md").read_text().splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("python -m avlib.prepare ") and "--src" in line]


@pytest.fixture(scope="module")
def paper_smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_smoke")
    repo = root / "repo"
    repo.mkdir()
    _copy_repository(repo)
    start = time.monotonic()
    downloads = build_downloads(root / "downloads")
    commands = readme_prepare_commands()
    assert sorted(c[3] for c in commands) == sorted(["librispeech", "clotho", "audiocaps", "videoinstruct", "video-chatgpt",
                                                     "activitynet-qa", "music-avqa"]), "the README names every source"
    for command in commands:
        src = command.index("--src") + 1
        command[src] = command[src].replace("~/downloads", str(root / "downloads"))
        result = sh(sys.executable, *command[1:], cwd=repo, check=False)
        assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    assert downloads  # every source was built
    sh(sys.executable, "-m", "avlib.config", "use", "paper-smoke", cwd=repo)
    result = sh(str(BIN / "dvc"), "repro", cwd=repo, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return repo, time.monotonic() - start


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_real_data_path_runs_end_to_end(paper_smoke):
    repo, seconds = paper_smoke
    metrics = json.loads((repo / "metrics" / "study.json").read_text())
    assert _finite(metrics)
    assert metrics["benchmarks"] == ["music_avqa", "video_chatgpt", "activitynet_qa"]
    avqa = metrics["music_avqa"]
    for needs in ("audio", "visual", "audio-visual"):  # per modality, both models, with the paired CI
        assert 0 <= avqa["av"][needs] <= 1 and 0 <= avqa["vision_only"][needs] <= 1
        low, high = avqa["difference"][needs]["ci"]
        assert low <= avqa["difference"][needs]["mean"] <= high
    assert avqa["items"] == {"audio": 8, "audio-visual": 8, "visual": 8}  # the deleted question is left out
    assert set(avqa["by_kind"]["av"]) == {"Counting", "Location", "Temporal", "Existential", "Comparative"}
    assert set(avqa["ablations"]) == {"mute_audio", "blank_frames", "swap_audio"}
    assert set(metrics["video_chatgpt"]["av"]) == {"correctness", "detail", "context", "temporal", "consistency"}
    assert 0 <= metrics["activitynet_qa"]["av"]["accuracy"] <= 1 and metrics["activitynet_qa"]["items"] == 6
    manifest = json.loads((repo / "checkpoints" / "foundation" / "manifest.json").read_text())
    assert manifest["trained"] is False  # this profile says its miniature encoders are untrained
    assert not (repo / "runs" / "pretrain" / "vision").exists()  # the paper recipe loads its visual projector
    assert (repo / "reports" / "predictions" / "video_chatgpt_official" / "av" / "consistency_pred").is_file()
    print(f"paper-smoke: prepare + dvc repro in {seconds:.0f} s")
    assert seconds < 600, f"the real path took {seconds:.0f} s (target: under 5 minutes on 2 cores)"


@pytest.mark.slow
def test_no_stage_reads_a_split_only_the_synthetic_corpus_has(paper_smoke):
    repo, _ = paper_smoke
    splits = {p.stem for p in (repo / "data" / "splits").glob("*.json")}
    assert "image_captions" not in splits
    notebooks = {p.name: p.read_text() for p in (repo / "reports" / "notebooks").glob("*.ipynb")}
    assert len(notebooks) == 5 and not any("Traceback" in text for text in notebooks.values())


@pytest.mark.slow
def test_a_second_repro_is_a_no_op(paper_smoke):
    repo, _ = paper_smoke
    status = sh(str(BIN / "dvc"), "status", cwd=repo).stdout
    assert re.search(r"up to date|nothing to reproduce", status, re.I) or not [l for l in status.splitlines()
                                                                            if l.strip() and not l.startswith(("data.dvc", "\t", " "))], status
