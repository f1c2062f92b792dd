"""Benchmark: installing requirements.lock into a new virtual environment, four ways side by side in one run:
one pip compiling every module to bytecode (pip's default); the same without (`--no-compile`); without, then
compiled by `python -m compileall` on every core; and tools/venv.sh as `make venv` runs it (two pips at once,
each on its part of the lock, then `pip check`). Then a process importing the study's packages in each, with
PYTHONDONTWRITEBYTECODE set as on CI machines. There no process writes bytecode, so without it every process
compiles what it imports from source, again.

Needs a few GB of free disk under --dir; pip finds the packages where it is configured to (its cache, local folders).

    python benchmarks/venv_install.py [--rounds R] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = "import torch, transformers, peft, whisper, open_clip, papermill, matplotlib, seaborn, dvc.repo"


def timed(command: list[str], env: dict | None = None, check: bool = True) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def install(venv: Path, compile_: str) -> tuple[float, float]:
    """(seconds to install the lock, seconds of one process's imports) in a new environment at `venv`.

    compile_: "pip" (pip compiles as it installs), "none", "compileall" (afterwards, on every core), or "venv.sh"
    (tools/venv.sh; its time includes its own pip upgrade, a no-op here, and the kernel's registration)."""
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    flags = ["--no-compile"] if compile_ in ("none", "compileall") else []
    subprocess.run([python, "-m", "pip", "install", "--quiet", *flags, "--upgrade", "pip==26.3"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if compile_ == "venv.sh":
        seconds = timed(["bash", str(ROOT / "tools" / "venv.sh"), str(venv)])
    else:
        seconds = timed([python, "-m", "pip", "install", "--quiet", *flags, "-r", str(ROOT / "requirements.lock")])
    if compile_ == "compileall":
        site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                              capture_output=True, text=True).stdout.strip()
        # exit status 1 where a packaged file is not Python 3.11 (test fixtures); pip skips those the same way
        seconds += timed([python, "-m", "compileall", "-q", "-j", "0", site], check=False)
    return seconds, timed([python, "-c", IMPORTS], env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1, help="each way installed this many times, alternating")
    parser.add_argument("--dir", default=None, help="where the scratch environment goes (default: a temporary folder)")
    args = parser.parse_args()
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="venv-bench-"))
    venv = scratch / "venv"
    ways = {"compiled at install (pip's default)": "pip", "--no-compile": "none",
            "--no-compile, then compileall -j 0": "compileall", "tools/venv.sh (two pips at once)": "venv.sh"}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    try:
        for _ in range(args.rounds):
            for name, compile_ in ways.items():
                results[name].append(install(venv, compile_))
    finally:
        shutil.rmtree(venv, ignore_errors=True)
    print(f"requirements.lock from pip's cache into a new environment ({args.rounds} round(s); best shown):")
    together = {}
    for name, runs in results.items():
        together[name] = min(i + f for i, f in runs)
        print(f"  {name:38s} install {min(i for i, _ in runs):6.1f} s  imports {min(f for _, f in runs):5.1f} s a process  "
              f"together {together[name]:6.1f} s")
    default, *others = together.items()
    for name, seconds in others:
        print(f"  {name} against the default, install and one process's imports together: "
              f"{seconds / default[1]:.2f}x the time")
    print("  (a make repro starts about a dozen processes that import the stack: dvc, papermill and a kernel per notebook)")


if __name__ == "__main__":
    main()
