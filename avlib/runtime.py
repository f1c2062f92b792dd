"""The CPU's arithmetic, pinned so that a run gives the same bits on any x86-64 machine.

PyTorch, oneDNN and MKL each pick kernels for the CPU they find: AVX-512 where
it exists, AVX2 elsewhere. Those kernels sum in different orders and round
differently, and so does a reduction split over a different number of
threads; a miniature model trained for minutes ends up with different weights,
and every number after it moves. `configure` pins all of it (measured: the
ATen capability, oneDNN's ISA, MKL's code path and the thread count each
change the trained weights on their own):

* ATEN_CPU_CAPABILITY=avx2: PyTorch's own vectorised kernels;
* ONEDNN_MAX_CPU_ISA=AVX2: oneDNN's JIT kernels (convolutions);
* MKL_CBWR=AVX2: MKL's conditional numerical reproducibility mode;
* a fixed intra-op thread count.

Each library reads its setting once, at its first use: call `configure` at the
start of a process, before any tensor is computed. It checks what it can and
raises if it was called too late.

Where a GPU is present, the stages use it (and nothing changes on a CPU):
`for_inference` moves a frozen model there in bf16, for feature extraction and
for generating answers; training keeps its trainable parts in fp32 and casts
the frozen weights to bf16 (avlib.train).
"""

from __future__ import annotations

import os
import platform

import torch

from avlib.config import RuntimeConfig

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}


def configure(runtime: RuntimeConfig) -> None:
    """Pin the CPU kernels and threads as `runtime` says (params.yaml's `runtime` section)."""
    if runtime.threads < 0:
        raise ValueError(f"runtime.threads must be 0 (the library's default) or more, got {runtime.threads}")
    if runtime.cpu_kernels == "avx2":
        if platform.machine().lower() not in ("x86_64", "amd64"):
            raise RuntimeError(f"runtime.cpu_kernels: avx2 pins x86-64 kernels, but this is {platform.machine()}; "
                               "set runtime.cpu_kernels: native (results will differ from an x86-64 run)")
        os.environ.update(PINNED)
        capability = torch.backends.cpu.get_cpu_capability()
        if capability != "AVX2":
            raise RuntimeError(
                f"PyTorch runs {capability} kernels, not AVX2: either this CPU lacks AVX2 (set runtime.cpu_kernels: "
                "native; results will differ from the committed run), or a tensor was computed before "
                "avlib.runtime.configure (call it first thing in the process)"
            )
    if runtime.threads:
        torch.set_num_threads(runtime.threads)


def describe() -> dict:
    """What this process computes with: for a run's record."""
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        **{name: os.environ.get(name) for name in PINNED},
    }


def accelerated() -> bool:
    """Whether a GPU is here to compute on."""
    return torch.cuda.is_available()


def compute_dtype() -> torch.dtype:
    """What frozen models compute in: bf16 on a GPU, float32 on the CPU (exact, and what the tiny study was built in)."""
    return torch.bfloat16 if accelerated() else torch.float32


def for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """The model on the GPU in bf16 where there is one (feature extraction, answers); unchanged on the CPU.

    Take a model's feature-cache key (avlib.stages.open_cache) before this: the key
    hashes the weights as stored.
    """
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
