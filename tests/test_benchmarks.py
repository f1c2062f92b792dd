"""The benchmark scripts run (tiny configurations), so what they print can be trusted to be computed."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(*args):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=600, check=True).stdout


@pytest.mark.slow
def test_gpu_lora_step_runs_tiny_on_cpu():
    out = run(BENCHMARKS / "gpu_lora_step.py", "--tiny", "--max-batch", "2", "--steps", "1")
    assert "batch 1:" in out and "tokens/s" in out and "largest batch that fit: 2" in out


@pytest.mark.slow
def test_media_decode_benchmark_prints_its_ratio():
    out = run(BENCHMARKS / "media_decode.py", "--repeats", "1", "--size", "160x120")
    assert "dense speedup vs decode all, convert 8:" in out and "sparse speedup vs decode all, convert 8:" in out


@pytest.mark.slow
def test_paper_dryrun_runs_tiny_on_cpu():
    out = run(BENCHMARKS / "paper_dryrun.py", "--tiny")
    for line in ("feature extraction:", "gradient checkpointing off:", "gradient checkpointing on:", "generation:", "speedup:"):
        assert line in out, out


@pytest.mark.slow
def test_cpu_kernels_benchmark_prints_its_ratio():
    out = run(BENCHMARKS / "cpu_kernels.py", "--rounds", "1", "--steps", "2")
    assert "avx2 / native, cached features:" in out and "compatible / native, cached features:" in out
    assert "(AVX2, MKL " in out


@pytest.mark.slow
def test_train_step_benchmark_prints_its_ratios():
    out = run(BENCHMARKS / "train_step.py", "--steps", "1", "--batch", "2")
    for ratio in ("whole rows", "one pass", "all logits", "gelu_new", "raw"):
        assert f"ratio {ratio} / cached:" in out, out
    assert "vocabulary" in out and "GELUTanh vs phi-2's gelu_new" in out
