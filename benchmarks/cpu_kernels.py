"""Benchmark: what pinning the CPU kernels to AVX2 (runtime.cpu_kernels: avx2) costs.

Runs benchmarks/train_step.py (a tiny finetuning step, with and without the
encoders) in fresh processes, alternately with the pinned AVX2 kernels and
with the CPU's native ones (AVX-512 where it has it), --rounds times each, and
prints the best seconds per step of each and their ratio. Each library picks
its kernels once per process, hence one process per measurement.

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
    capability = re.search(r"CPU kernels (\w+)", out).group(1)
    times = {label: float(value) for label, value in re.findall(r"step from (cached features|raw media)[^:]*: ([\d.]+) s/step", out)}
    return {"capability": capability, **times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"native": [], "avx2": []}
    for _ in range(args.rounds):  # interleaved, so drift hits both alike
        for kernels in runs:
            runs[kernels].append(measure(kernels, args.steps))
    best = {k: {label: min(r[label] for r in v) for label in ("cached features", "raw media")} for k, v in runs.items()}
    for kernels, values in best.items():
        print(f"{kernels:6s} ({runs[kernels][0]['capability']}): {values['cached features']:.3f} s/step from cached features, "
              f"{values['raw media']:.3f} s/step with the encoders")
    for label in ("cached features", "raw media"):
        print(f"avx2 / native, {label}: {best['avx2'][label] / best['native'][label]:.2f}x")


if __name__ == "__main__":
    main()
