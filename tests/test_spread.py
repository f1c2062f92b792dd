"""avlib.spread's reuse of the pipeline's own run: only where dvc finds it up to date."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from avlib.spread import pipeline_seed

DVC = str(Path(sys.executable).with_name("dvc"))


def _dvc(repo: Path, *args: str) -> None:
    done = subprocess.run([DVC, *args], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def repo(tmp_path):
    """A one-stage DVC pipeline that writes a study's metrics and predictions, run once."""
    root = tmp_path / "repo"
    root.mkdir()
    _dvc(root, "init", "--no-scm", "-q")
    (root / "input.txt").write_text("1\n")
    (root / "evaluate.sh").write_text("mkdir -p reports/predictions metrics\ncp input.txt reports/predictions/a.json\n"
                                     "echo '{\"audio\": 0.9}' > metrics/study.json\n")
    (root / "dvc.yaml").write_text("stages:\n  evaluate:\n    cmd: sh evaluate.sh\n    deps: [evaluate.sh, input.txt]\n"
                                   "    outs: [reports/predictions]\n    metrics: [{metrics/study.json: {cache: false}}]\n")
    _dvc(root, "repro", "-q")
    return root


def test_an_up_to_date_pipeline_is_read_as_its_seed(repo, tmp_path):
    out = tmp_path / "spread" / "seed0"
    assert pipeline_seed(out, repo=repo) == {"audio": 0.9}
    assert (out / "predictions" / "a.json").read_text() == "1\n"
    assert pipeline_seed(out, repo=repo) == {"audio": 0.9}  # again over the copy


def test_a_stale_pipeline_is_refused_naming_the_stage(repo, tmp_path):
    (repo / "input.txt").write_text("2\n")
    with pytest.raises(RuntimeError, match=r"not up to date \(evaluate changed\): run `dvc repro` first"):
        pipeline_seed(tmp_path / "seed0", repo=repo)
    assert not (tmp_path / "seed0").exists()
