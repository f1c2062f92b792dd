"""The tiny study's arithmetic does not depend on the CPU: avlib.runtime pins kernels and threads."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import SMALL_PARAMS

# Stage 1's three miniature trainings, 30 steps each, in a fresh process (each library picks its
# kernels once per process); prints the sha256 of each saved model.
TRAIN = """
import copy, json, sys
from pathlib import Path
from avlib.config import Params, RuntimeConfig, from_dict
from avlib.runtime import configure
configure(RuntimeConfig(cpu_kernels=sys.argv[3], threads=2))
from avlib.foundation import build_foundation
params = json.loads(sys.argv[1])
for name in ("whisper", "siglip", "phi"):
    params["foundation"][name]["steps"] = 30
manifest = build_foundation(from_dict(Params, params), sys.argv[2], Path(sys.argv[4]), log=lambda *a: None)
print(json.dumps({k: v["sha256"] for k, v in manifest["checkpoints"].items()}))
"""

# What an AVX2-only x86-64 machine looks like to each library.
AVX2_MACHINE = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
NATIVE = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "OMP_NUM_THREADS")


def train(tmp_path, corpus, kernels: str, machine: dict, name: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in NATIVE} | machine
    out = subprocess.run([sys.executable, "-c", TRAIN, json.dumps(SMALL_PARAMS), str(corpus), kernels, str(tmp_path / name)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


def has_avx512() -> bool:
    return "avx512f" in open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else False


@pytest.mark.slow
@pytest.mark.skipif(not has_avx512(), reason="needs a CPU with AVX-512 to compare two dispatch settings")
def test_pinned_kernels_train_the_same_bits_whatever_the_cpu_offers(tmp_path, small_corpus):
    avx512_machine = train(tmp_path, small_corpus, "avx2", {}, "a")
    avx2_machine = train(tmp_path, small_corpus, "avx2", AVX2_MACHINE, "b")
    assert avx512_machine == avx2_machine
    # and the test can fail: unpinned, the two machines train different weights
    assert train(tmp_path, small_corpus, "native", {}, "c") != train(tmp_path, small_corpus, "native", AVX2_MACHINE, "d")


def test_configure_refuses_to_pin_after_kernels_were_chosen():
    if torch.backends.cpu.get_cpu_capability() == "AVX2":
        pytest.skip("this process already runs AVX2 kernels")
    code = ("import torch; torch.ones(8).sum(); from avlib.config import RuntimeConfig; from avlib.runtime import configure; "
            "configure(RuntimeConfig())")
    env = {k: v for k, v in os.environ.items() if k not in NATIVE}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "a tensor was computed before avlib.runtime.configure" in out.stderr


def configure_in_fresh_process(kernels: str, machine: dict) -> subprocess.CompletedProcess:
    code = ("import json, warnings; warnings.simplefilter('always'); from avlib.config import RuntimeConfig; "
            f"from avlib.runtime import configure, describe; configure(RuntimeConfig(cpu_kernels='{kernels}')); "
            "print(json.dumps(describe()))")
    env = {k: v for k, v in os.environ.items() if k not in NATIVE} | machine
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def has_mkl() -> bool:
    from avlib.runtime import _mkl

    return _mkl() is not None  # looks the library up; computes nothing


def cpu_vendor() -> str:
    if not os.path.exists("/proc/cpuinfo"):
        return "?"
    return next((line.split(":")[1].strip() for line in open("/proc/cpuinfo") if line.startswith("vendor_id")), "?")


@pytest.mark.skipif(not has_mkl(), reason="this PyTorch build has no MKL")
def test_each_setting_records_the_mkl_branch_running_and_warns_exactly_when_it_is_not_the_one_asked_for():
    for kernels, branch in (("avx2", "AVX2"), ("compatible", "COMPATIBLE")):
        out = configure_in_fresh_process(kernels, {})
        assert out.returncode == 0, out.stderr[-2000:]
        record = json.loads(out.stdout.splitlines()[-1])
        assert record["MKL_CBWR"] == branch and record["cpu_capability"] == "AVX2"
        assert record["cpu"].startswith(f"{cpu_vendor()} family ")  # the vendor decides MKL's branch
        if cpu_vendor() == "GenuineIntel":  # where MKL documents every branch as honoured
            assert record["mkl_branch"] == branch
        warned = f"MKL runs its {record['mkl_branch']} branch, not {branch}" in out.stderr
        assert warned == (record["mkl_branch"] != branch), out.stderr[-2000:]


@pytest.mark.skipif(not has_mkl(), reason="this PyTorch build has no MKL")
def test_a_cpu_where_mkl_ignores_the_avx2_branch_is_named_in_a_warning():
    # MKL told the CPU has no AVX2 runs another branch (AUTO), as it does on a non-Intel CPU
    out = configure_in_fresh_process("avx2", {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"})
    assert out.returncode == 0, out.stderr[-2000:]
    branch = json.loads(out.stdout.splitlines()[-1])["mkl_branch"]
    assert branch != "AVX2"
    assert f"MKLBranchWarning: MKL runs its {branch} branch, not AVX2" in out.stderr and "runtime.cpu_kernels: compatible" in out.stderr


def test_threads_are_pinned_and_a_negative_count_is_refused():
    from avlib.config import RuntimeConfig
    from avlib.runtime import configure

    before = torch.get_num_threads()
    try:
        configure(RuntimeConfig(cpu_kernels="native", threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="runtime.threads must be 0"):
        configure(RuntimeConfig(cpu_kernels="native", threads=-1))
