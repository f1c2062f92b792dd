"""Benchmark: what pinning the CPU kernels (runtime.cpu_kernels: avx2 or compatible) costs.

Runs benchmarks/train_step.py (a tiny finetuning step, with and without the
encoders) in fresh processes, in turn with the CPU's native kernels (AVX-512
where it has it), the pinned AVX2 ones and the pinned ones with MKL's SSE2
branch (compatible), --rounds times each, and prints the best seconds per step
of each and its ratio to native. Each library picks its kernels once per
process, hence one process per measurement.

    python benchmarks/cpu_kernels.py [--rounds 3] [--steps 20]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

STEP = Path(__file__).with_name("train_step.py")


def measure(kernels: str, steps: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, str(STEP), "--steps", str(steps), "--cpu-kernels", kernels, "--device", "cpu"],
                         capture_output=True, text=True, check=True).stdout
    capability, mkl = re.search(r"CPU kernels (\w+), MKL branch (\w+)", out).groups()
    times = {label: float(value) for label, value in re.findall(r"step from (cached features|raw media)[^:]*: ([\d.]+) s/step", out)}
    return {"capability": capability, "mkl": mkl, **times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"native": [], "avx2": [], "compatible": []}
    for _ in range(args.rounds):  # interleaved, so drift hits both alike
        for kernels in runs:
            runs[kernels].append(measure(kernels, args.steps))
    best = {k: {label: min(r[label] for r in v) for label in ("cached features", "raw media")} for k, v in runs.items()}
    for kernels, values in best.items():
        print(f"{kernels:10s} ({runs[kernels][0]['capability']}, MKL {runs[kernels][0]['mkl']}): {values['cached features']:.3f} "
              f"s/step from cached features, {values['raw media']:.3f} s/step with the encoders")
    for kernels in ("avx2", "compatible"):
        for label in ("cached features", "raw media"):
            print(f"{kernels} / native, {label}: {best[kernels][label] / best['native'][label]:.2f}x")


if __name__ == "__main__":
    main()
