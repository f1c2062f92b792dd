"""The CPU's arithmetic, pinned so that a run gives the same bits on another machine.

PyTorch, oneDNN and MKL each pick kernels for the CPU they find: AVX-512 where
it exists, AVX2 elsewhere. Those kernels sum in different orders and round
differently, and so does a reduction split over a different number of
threads; a miniature model trained for minutes ends up with different weights,
and every number after it moves. `configure` pins all of it (measured: the
ATen capability, oneDNN's ISA, MKL's code path and the thread count each
change the trained weights on their own):

* ATEN_CPU_CAPABILITY=avx2: PyTorch's own vectorised kernels;
* ONEDNN_MAX_CPU_ISA=AVX2: oneDNN's JIT kernels (convolutions);
* MKL_CBWR: MKL's conditional numerical reproducibility branch (its matrix products);
* a fixed intra-op thread count.

MKL honours its AVX2 branch on Intel processors only. On other CPUs (AMD's)
it runs its AUTO branch instead, which is reproducible on that CPU model and
no other. Intel documents this, and a rerun on an Intel Xeon gave other bits
than the committed run of the day before, made where earlier runs named an
AMD EPYC (the miniature Phi alone: validation perplexity 1.175852474, not
1.175852532). Hence three settings:

* avx2 (the tiny profiles): MKL_CBWR=AVX2. The same bits on every Intel CPU
  with AVX2; on another vendor's CPU, bits of its own, and `configure` warns.
* compatible: MKL_CBWR=COMPATIBLE, MKL's SSE2 branch, which Intel documents as
  the same on Intel and compatible CPUs. Its matrix products are slower
  (`python benchmarks/cpu_kernels.py` prints by how much).
* native: each library picks its widest kernels (the paper profile).

Each library reads its setting once, at its first use: call `configure` at the
start of a process, before any tensor is computed. It checks what it can and
raises if it was called too late. `describe` says what a process computed
with: the CPU and the MKL branch actually running.

Where a GPU is present, the stages use it: `for_inference` moves a frozen model
there in bf16, for feature extraction and for generating answers (on every
device it first merges the model's LoRA adapters into the LLM's weights);
training keeps its trainable parts in fp32 and casts the frozen weights to bf16
(avlib.train).
"""

from __future__ import annotations

import ctypes
import os
import platform
import warnings
from pathlib import Path

import torch

from avlib.config import RuntimeConfig

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}  # and MKL_CBWR, by setting:
MKL_BRANCH = {"avx2": "AVX2", "compatible": "COMPATIBLE"}  # runtime.cpu_kernels -> MKL_CBWR
# mkl_cbwr_get's codes (MKL's mkl_cbwr.h) for the branches a run may end up on
MKL_BRANCH_NAMES = {0: "OFF", 1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2",
                    9: "AVX", 10: "AVX2", 12: "AVX512", 14: "AVX512_E1"}


class MKLBranchWarning(UserWarning):
    """MKL computes on another branch than runtime.cpu_kernels asks for: the run's bits are this CPU model's own."""


def configure(runtime: RuntimeConfig) -> None:
    """Pin the CPU kernels and threads as `runtime` says (params.yaml's `runtime` section)."""
    if runtime.threads < 0:
        raise ValueError(f"runtime.threads must be 0 (the library's default) or more, got {runtime.threads}")
    if runtime.cpu_kernels in MKL_BRANCH:
        asked = MKL_BRANCH[runtime.cpu_kernels]
        if platform.machine().lower() not in ("x86_64", "amd64"):
            raise RuntimeError(f"runtime.cpu_kernels: {runtime.cpu_kernels} pins x86-64 kernels, but this is "
                               f"{platform.machine()}; set runtime.cpu_kernels: native (results will differ from an x86-64 run)")
        os.environ.update({**PINNED, "MKL_CBWR": asked})
        capability = torch.backends.cpu.get_cpu_capability()
        if capability != "AVX2":
            raise RuntimeError(
                f"PyTorch runs {capability} kernels, not AVX2: either this CPU lacks AVX2 (set runtime.cpu_kernels: "
                "native; results will differ from the committed run), or a tensor was computed before "
                "avlib.runtime.configure (call it first thing in the process)"
            )
        branch = mkl_branch()
        if branch is not None and branch != asked:
            remedy = ("MKL keeps its AVX2 branch for Intel processors; for bits that match any x86-64 CPU, set "
                      "runtime.cpu_kernels: compatible (slower)" if asked == "AVX2" else "no setting here pins it further")
            warnings.warn(f"MKL runs its {branch} branch, not {asked}, on this CPU ({cpu_name()}): this run's bits match "
                          f"runs on this CPU model only, not the committed run. {remedy}.", MKLBranchWarning, stacklevel=2)
    if runtime.threads:
        torch.set_num_threads(runtime.threads)


def _mkl():
    """PyTorch's bundled MKL, or None where this build has none (aarch64, other BLAS)."""
    try:
        library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = library.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
    return get


def mkl_branch() -> str | None:
    """The branch MKL's matrix products run on ("AVX2", "AUTO", ...), after it was first used; None without MKL."""
    get = _mkl()
    if get is None:
        return None
    torch.ones(64, 64) @ torch.ones(64, 64)  # MKL settles its branch at its first matrix product
    code = get(1)  # MKL_CBWR_BRANCH
    return MKL_BRANCH_NAMES.get(code, str(code))


def cpu_name() -> str:
    """The CPU's vendor, family, model and name as /proc/cpuinfo gives them (else what platform knows).

    The vendor decides which MKL branch runs; under a hypervisor the name is often generic.
    """
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return platform.processor() or platform.machine()
    fields = {}
    for line in info.read_text().splitlines():
        key, _, value = line.partition(":")
        if not key.strip() and fields:
            break  # the first processor is enough
        fields.setdefault(key.strip(), value.strip())
    return (f"{fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} model {fields.get('model', '?')}: "
            f"{fields.get('model name', '?')}")


def describe() -> dict:
    """What this process computes with: for a run's record."""
    return {
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_branch": mkl_branch(),
        "threads": torch.get_num_threads(),
        **{name: os.environ.get(name) for name in (*PINNED, "MKL_CBWR")},
    }


def accelerated() -> bool:
    """Whether a GPU is here to compute on."""
    return torch.cuda.is_available()


def compute_dtype() -> torch.dtype:
    """What frozen models compute in: bf16 on a GPU, float32 on the CPU (exact, and what the tiny study was built in)."""
    return torch.bfloat16 if accelerated() else torch.float32


def for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """The model as it answers: LoRA adapters merged into the LLM's weights (0.77x the time an answer on the tiny
    profile's CPU, the same answers: `python benchmarks/answer_speed.py`), on the GPU in bf16 where there is one
    (feature extraction, answers). Train and save before this, not after.

    Take a model's feature-cache key (avlib.stages.open_cache) before this: the key
    hashes the weights as stored.
    """
    if hasattr(model, "merge_lora"):
        model.merge_lora()  # in float32, before any cast
    if accelerated():
        model = model.to("cuda", dtype=compute_dtype())
        model.audio_encoder.norms_in_float()
    return model


def frozen_in_bf16(model: torch.nn.Module) -> None:
    """For training on a GPU: the frozen weights in bf16 (half their memory; autocast computes in bf16 anyway),
    what trains kept in float32 for its optimizer."""
    for parameter in model.parameters():
        if not parameter.requires_grad:
            parameter.data = parameter.data.to(torch.bfloat16)
