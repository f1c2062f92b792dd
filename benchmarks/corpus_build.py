"""Benchmark: time and disk size of building a synthetic corpus (default: tiny, all cores).

    python benchmarks/corpus_build.py [--profile tiny] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from avlib import synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny", choices=sorted(synth.PROFILES))
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifest = synth.build(args.profile, tmp, workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
        files = [p for p in Path(tmp).rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
    print(f"profile {args.profile}, {args.workers or min(os.cpu_count() or 1, 8)} workers, {os.cpu_count()} cores")
    print(f"items: {manifest['counts']}")
    print(f"generation time: {seconds:.1f} s (target for tiny: <= 120 s on 2 cores)")
    print(f"size on disk: {size / 2**20:.1f} MiB in {len(files)} files")


if __name__ == "__main__":
    main()
