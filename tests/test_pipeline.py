"""The whole study, end to end, on the smoke profile: `dvc repro` in a copy of the repository."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}


def sh(*command, cwd, check=True):
    return subprocess.run(command, cwd=cwd, env=ENV, check=check, capture_output=True, text=True, timeout=1800)


def without_cpu_warning(text: str) -> str:
    """The text less avlib.runtime's warning that MKL computes this CPU model's own bits (on an AMD CPU, say): the
    study's own word on the machine, not noise. Python prints a warning as its line, then the source line that raised it."""
    return re.sub(r"^.*: MKLBranchWarning: .*\n(?:  .*\n)?", "", text, flags=re.MULTILINE)


def _copy_repository(target: Path) -> None:
    files = sh("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout.split()
    for name in files:
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    sh("git", "init", "-q", cwd=target)
    sh("git", "-c", "user.email=ci@example.org", "-c", "user.name=ci", "add", "-A", cwd=target)
    sh("git", "-c", "user.email=ci@example.org", "-c", "user.name=ci", "commit", "-qm", "copy", cwd=target)


def _finite(value) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("smoke") / "repo"
    repo.mkdir()
    _copy_repository(repo)
    sh(sys.executable, "-m", "avlib.config", "use", "smoke", cwd=repo)
    sh(sys.executable, "-m", "avlib.synth", "--params", "params.yaml", "--out", "data", cwd=repo)
    result = sh(str(BIN / "dvc"), "repro", cwd=repo, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return repo


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_smoke_pipeline_produces_the_study(smoke_repo):
    for path in ("checkpoints/foundation/manifest.json", "runs/pretrain/audio/final/parts.json",
                 "runs/finetune/av/final/parts.json", "runs/finetune/vision_only/final/parts.json",
                 "reports/figures/accuracy_by_needs.png", "reports/predictions/video_chatgpt_av_consistency_qa.json",
                 "reports/notebooks/04_evaluate.html", "reports/notebooks/03_finetune_vision_only.ipynb"):
        assert (smoke_repo / path).is_file(), path
    study = json.loads((smoke_repo / "metrics" / "study.json").read_text())
    assert _finite(study) and set(study["audio_aware"]["difference"]) == {"audio", "visual", "audio-visual"}
    consistency = json.loads((smoke_repo / "reports/predictions/video_chatgpt_av_consistency_qa.json").read_text())
    assert set(consistency[0]) == {"video_name", "Q1", "Q2", "A", "pred1", "pred2"}
    shown = sh(str(BIN / "dvc"), "metrics", "show", cwd=smoke_repo).stdout
    assert "metrics/study.json" in shown
    # The five files the benchmark's evaluate_benchmark.sh reads from its PRED_DIR, each with the keys its scripts read
    official = smoke_repo / "reports" / "predictions" / "video_chatgpt_official"
    for model in ("av", "vision_only"):
        for name in ("correctness_pred", "detailed_orientation_pred", "contextual_pred", "temporal_understanding_pred"):
            assert {"video_name", "Q", "A", "pred"} <= set(json.loads((official / model / name).read_text())[0])
        assert {"video_name", "Q1", "Q2", "A", "pred1", "pred2"} <= set(json.loads((official / model / "consistency_pred").read_text())[0])
    # Every criterion says how many items its judge scored and failed, and which judge it was
    accounting = study["video_chatgpt"]["accounting"]["av"]["consistency"]
    assert accounting["failed"] == 0 and accounting["scored"] > 0 and study["judge_info"]["judge"] == "reference"


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_a_second_repro_reruns_nothing_and_an_evaluation_param_reruns_only_evaluation(smoke_repo):
    assert "Data and pipelines are up to date" in sh(str(BIN / "dvc"), "status", cwd=smoke_repo).stdout
    params = (smoke_repo / "params.yaml").read_text()
    (smoke_repo / "params.yaml").write_text(params.replace("bootstrap_resamples: 500", "bootstrap_resamples: 400"))
    try:
        status = sh(str(BIN / "dvc"), "status", "--json", cwd=smoke_repo).stdout
        assert set(json.loads(status)) == {"evaluate"}
    finally:
        (smoke_repo / "params.yaml").write_text(params)


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_the_cli_answers_questions_about_a_video(smoke_repo):
    video = next((smoke_repo / "data" / "clips").glob("test_*.mp4"))
    result = sh(sys.executable, "-m", "avlib", "ask", str(video), "What word does the speaker say?", "--json", cwd=smoke_repo)
    answer = json.loads(result.stdout)
    assert answer["question"] == "What word does the speaker say?" and isinstance(answer["answer"], str)
    assert without_cpu_warning(result.stderr) == "", "an answer comes without progress bars or warnings"
    quiet = json.loads(sh(sys.executable, "-m", "avlib", "ask", str(video), "What?", "--json", "--no-audio", cwd=smoke_repo).stdout)
    assert quiet["audio_used"] is False
    twin = json.loads(sh(sys.executable, "-m", "avlib", "--model", "vision_only", "ask", str(video), "What?", "--json",
                         cwd=smoke_repo).stdout)
    assert twin["audio_used"] is False and twin["model"] == "vision_only"  # the twin never hears the clip
    (smoke_repo / "broken.mp4").write_text("not a video")
    bad = sh(sys.executable, "-m", "avlib", "ask", "broken.mp4", "What?", cwd=smoke_repo, check=False)
    assert bad.returncode != 0 and "broken.mp4" in bad.stderr and "Traceback" not in bad.stderr
    for question, message in (("What does <audio> say?", "must not contain"), ("   ", "the question is empty")):
        refused = sh(sys.executable, "-m", "avlib", "ask", str(video), question, cwd=smoke_repo, check=False)
        assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr
    undecodable = subprocess.run([sys.executable, "-m", "avlib", "ask", str(video), b"what \xff\xfe?"], cwd=smoke_repo, env=ENV,
                                 capture_output=True, text=True, timeout=600)
    assert undecodable.returncode == 2 and "not UTF-8" in undecodable.stderr
    missing_folder = sh(sys.executable, "-m", "avlib", "predict", "data/benchmarks/video_chatgpt/temporal_qa.json", "--videos",
                        "data/clips", "--out", "no/such/folder/p.json", cwd=smoke_repo, check=False)
    assert missing_folder.returncode == 2 and "no/such/folder does not exist" in missing_folder.stderr
    out = smoke_repo / "predictions.json"
    sh(sys.executable, "-m", "avlib", "predict", "data/benchmarks/video_chatgpt/temporal_qa.json", "--videos", "data/clips",
       "--out", str(out), cwd=smoke_repo)
    assert set(json.loads(out.read_text())[0]) == {"Q", "A", "video_name", "pred"}


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_data_and_outputs_round_trip_through_a_dvc_remote(smoke_repo, tmp_path):
    remote = tmp_path / "remote"
    sh(str(BIN / "dvc"), "remote", "add", "-d", "local", str(remote), cwd=smoke_repo)
    sh("git", "-c", "user.email=ci@example.org", "-c", "user.name=ci", "add", "-A", cwd=smoke_repo)
    sh("git", "-c", "user.email=ci@example.org", "-c", "user.name=ci", "commit", "-qm", "smoke run", cwd=smoke_repo)
    sh(str(BIN / "dvc"), "push", cwd=smoke_repo)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(smoke_repo), str(clone), cwd=tmp_path)
    sh(str(BIN / "dvc"), "pull", cwd=clone)
    assert (clone / "runs" / "finetune" / "av" / "final" / "parts.json").is_file()
    status = sh(str(BIN / "dvc"), "status", cwd=clone).stdout
    assert "Data and pipelines are up to date" in status  # nothing to recompute


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_a_failing_cell_fails_the_stage_and_shows_in_the_notebook(smoke_repo):
    result = sh("tools/run_notebook.sh", "03_finetune", "broken", "-p", "variant", "nonsense", cwd=smoke_repo, check=False)
    assert result.returncode != 0
    executed = json.loads((smoke_repo / "reports" / "notebooks" / "broken.ipynb").read_text())
    errors = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and "variant must be 'av' or 'vision_only'" in errors[0]["evalue"]
    assert (smoke_repo / "reports" / "notebooks" / "broken.html").is_file()


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_the_seed_spread_reruns_stages_2_to_4_and_its_seed_0_is_the_pipelines_run(smoke_repo, tmp_path):
    sh(sys.executable, "-m", "avlib.spread", "--seeds", "0", "1", "--out", str(tmp_path / "spread"),
       "--metrics", str(tmp_path / "spread.json"), cwd=smoke_repo)
    spread = json.loads((tmp_path / "spread.json").read_text())
    study = json.loads((smoke_repo / "metrics" / "study.json").read_text())
    assert spread["per_seed"]["0"] == study  # the same bits as the notebooks' run
    difference = spread["summary"]["audio_aware.difference.audio.mean"]
    assert len(difference["values"]) == 2 and difference["sd"] >= 0
    # Another seed is another draw: other initial projectors and adapters, other batches, so other weights.
    # (Not other metrics: the smoke models can answer everything wrong under both seeds.)
    runs = {seed: tmp_path / "spread" / f"seed{seed}" / "finetune" for seed in (0, 1)}
    weights = {seed: {p.relative_to(run): p.read_bytes() for p in run.rglob("*.safetensors")} for seed, run in runs.items()}
    assert weights[0] and weights[0].keys() == weights[1].keys()
    assert all(weights[0][name] != weights[1][name] for name in weights[0])
    from avlib.spread import table

    rows = table(spread).splitlines()
    assert len(rows) == 2 + 3 and rows[2].startswith("| audio |") and "AV - twin, seed 1 [95% CI]" in rows[0]


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_the_stage_time_breakdown_reads_the_executed_notebooks(smoke_repo):
    out = sh(sys.executable, "benchmarks/stage_times.py", cwd=smoke_repo).stdout
    for stage in ("01_encoders", "02_pretrain_projectors", "03_finetune_av", "03_finetune_vision_only", "04_evaluate"):
        assert stage in out
    assert "all stages" in out and "slowest cells:" in out


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_the_stage1_reads_benchmark_compares_both_ways_on_the_corpus(smoke_repo):
    out = sh(sys.executable, "benchmarks/stage1_reads.py", "--every", "10", "--rounds", "1", cwd=smoke_repo).stdout
    for read in ("whisper: first audio window", "siglip: frames", "features: frames and audio", "all three"):
        assert re.search(rf"^{read} +\d+\.\d+s +\d+\.\d+s +\d+\.\d+x", out, re.MULTILINE), out


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_the_feature_probes_read_the_pipelines_cache(smoke_repo):
    out = sh(sys.executable, "benchmarks/feature_probes.py", "--steps", "20", cwd=smoke_repo).stdout
    facts, sides = out.split("The side of the motion")
    rows = [line for line in facts.splitlines() if line.startswith("| ") and not line.startswith("| fact")]
    assert [r.split(" | ")[0].strip("| ") for r in rows] == ["shape", "color", "background", "direction", "word", "sound", "beeps",
                                                            "speech_first"]
    assert all(0.0 <= float(cell) <= 1.0 for r in rows for cell in r.strip("| ").split(" | ")[1:] if cell != "-")
    axes = [line.strip("| ").split(" | ") for line in sides.splitlines() if line.startswith("| ") and not line.startswith("| axis")]
    assert [a[0] for a in axes] == ["horizontal", "vertical"] and all(0.0 <= float(c) <= 1.0 for a in axes for c in a[2:])


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_the_answer_attention_benchmark_reads_both_finetuned_models(smoke_repo):
    out = sh(sys.executable, "benchmarks/answer_attention.py", "--items", "8", cwd=smoke_repo).stdout
    for variant in ("av", "vision_only"):
        assert re.search(rf"^{variant}: \d+ direction questions \(runs\)", out, re.MULTILINE), out
    rows = [line.strip("| ").split(" | ") for line in out.splitlines() if re.match(r"^\| \d+ \| \d+ \|", line)]
    assert rows and all(abs(sum(map(float, row[2:6])) - 1) < 2e-3 for row in rows), out  # each head's shares sum to 1
    wrong = sh(sys.executable, "benchmarks/answer_attention.py", "--kind", "nonsense", cwd=smoke_repo, check=False)
    assert wrong.returncode != 0 and "no 'nonsense' questions" in wrong.stderr and "direction" in wrong.stderr


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_the_answer_benchmark_compares_merged_and_separate_adapters(smoke_repo):
    out = sh(sys.executable, "benchmarks/answer_speed.py", "--items", "40", "--rounds", "1", cwd=smoke_repo).stdout
    assert "adapters apart" in out and "adapters merged" in out and "merged / apart:" in out, out
    same, total = map(int, re.search(r"the same answer both ways: (\d+) of (\d+)", out).groups())
    assert 0 < total <= 40 and same >= 0.9 * total, out  # merging changes the arithmetic by rounding only


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_the_executed_notebooks_are_free_of_noise(smoke_repo):
    for path in sorted((smoke_repo / "reports" / "notebooks").glob("0*.ipynb")):
        notebook = json.loads(path.read_text())
        for number, cell in enumerate(notebook["cells"]):
            where = f"{path.name}, cell {number}"
            texts = ["".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", [])]
            bar_lines = sum(t.count("\r") + t.count("it/s") for t in texts)  # a bar writes one stream output per update
            assert bar_lines <= 3, f"{where}: {bar_lines} progress-bar lines"
            for output, text in zip(cell.get("outputs", []), texts):
                text = without_cpu_warning(text)
                assert "Warning" not in text, f"{where}: a warning reached the notebook: {text[:300]}"
                if output["output_type"] == "execute_result":
                    assert not re.match(r"<matplotlib|Text\(|\[<matplotlib|\d+$", text.strip()), f"{where}: a stray value {text[:80]}"


def _copy_study(smoke_repo: Path, target: Path) -> Path:
    """A copy of the built smoke study (its DVC cache too), so a test can damage it without touching the others'."""
    shutil.copytree(smoke_repo, target, symlinks=True)
    return target


def _final_parts(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "final").glob("*.safetensors"))}


def _edit_params(repo: Path, edit) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    edit(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_a_finetune_killed_under_dvc_repro_resumes_and_ends_as_an_uninterrupted_run(smoke_repo, tmp_path):
    import time

    import psutil

    def warmer(params):  # a finetune these inputs have never run: DVC has nothing to restore, it must train
        params["finetune"]["warmup"] += 1

    reference, repo = _copy_study(smoke_repo, tmp_path / "reference"), _copy_study(smoke_repo, tmp_path / "repo")
    for copy in (reference, repo):
        _edit_params(copy, warmer)
    sh(str(BIN / "dvc"), "repro", "-s", "finetune@av", cwd=reference)
    uninterrupted = _final_parts(reference / "runs" / "finetune" / "av")

    finetune = yaml.safe_load((repo / "params.yaml").read_text())["finetune"]
    steps, every = finetune["steps"], finetune["checkpoint_every"]
    assert every < steps, "the smoke finetune writes a checkpoint before its last step"
    for old in (repo / "checkpoints" / "training").glob("finetune_av*"):
        shutil.rmtree(old)  # the pipeline's own run left its last checkpoint: wait for this run's first
    process = subprocess.Popen([str(BIN / "dvc"), "repro", "-s", "finetune@av"], cwd=repo, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    progress = repo / "checkpoints" / "training" / "finetune_av" / "progress.json"
    while not progress.is_file():
        assert process.poll() is None, "the stage ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    # dvc, papermill and the kernel (which runs in a session of its own): everything, as a power cut would
    tree = psutil.Process(process.pid)
    for victim in [tree, *tree.children(recursive=True)]:
        victim.kill()
    process.wait()
    done = json.loads(progress.read_text())["step"]
    assert 0 < done < steps and not (repo / "runs" / "finetune" / "av" / "final").exists(), "killed mid-way"

    rerun = sh(str(BIN / "dvc"), "repro", "-s", "finetune@av", cwd=repo).stdout
    assert "skipping run" not in rerun, "the stage ran again"
    executed = (repo / "reports" / "notebooks" / "03_finetune_av.ipynb").read_text()
    assert f"resuming from step {done} " in executed, "the rerun picked up the checkpoint the killed run left"
    assert _final_parts(repo / "runs" / "finetune" / "av") == uninterrupted, "resumed, it ends bit for bit as the uninterrupted run"


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first test builds the whole smoke study
def test_an_evaluate_rerun_asks_the_chat_judge_nothing_twice(smoke_repo, tmp_path):
    from test_judge import ChatServer

    repo = _copy_study(smoke_repo, tmp_path / "repo")
    with ChatServer() as server:
        def chat(params):
            params["evaluate"]["judge"] = "chat"
            params["evaluate"]["chat"].update(base_url=server.url, api_key_env="AVG_TEST_KEY")

        _edit_params(repo, chat)
        env = {**ENV, "AVG_TEST_KEY": "sk-test"}
        run = lambda *args: subprocess.run([str(BIN / "dvc"), "repro", *args, "-s", "evaluate"], cwd=repo, env=env,
                                           capture_output=True, text=True, timeout=1800)
        first = run()
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        asked = len(server.requests)
        assert asked > 0, "the first run asked the judge"
        scores = json.loads((repo / "metrics" / "study.json").read_text())["video_chatgpt"]
        second = run("-f")  # DVC deletes the stage's outputs and runs it again
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert len(server.requests) == asked, f"the rerun asked the judge {len(server.requests) - asked} more time(s)"
        assert json.loads((repo / "metrics" / "study.json").read_text())["video_chatgpt"] == scores
