"""Benchmark: where the minutes of a `make repro` go, per stage and per cell.

Reads the executed notebooks the pipeline leaves in reports/notebooks/
(papermill records when each cell started and ended) and prints each stage's
seconds and share of the whole, then the slowest cells. Nothing is rerun: time
a `make repro` first, then read its breakdown here.

    python benchmarks/stage_times.py [--notebooks reports/notebooks] [--cells 8]
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

STAGES = ("01_encoders", "02_pretrain_projectors", "03_finetune_av", "03_finetune_vision_only", "04_evaluate")


def _seconds(metadata: dict) -> float | None:
    start, end = metadata.get("start_time"), metadata.get("end_time")
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def stage_times(folder: Path) -> tuple[dict[str, float], list[tuple[float, str, str]]]:
    """({stage: seconds}, [(seconds, stage, first line of the cell)]) from executed notebooks."""
    stages, cells = {}, []
    for name in STAGES:
        path = folder / f"{name}.ipynb"
        if not path.is_file():
            continue
        notebook = json.loads(path.read_text())
        total = notebook["metadata"].get("papermill", {}).get("duration")
        stages[name] = float(total) if total is not None else 0.0
        for cell in notebook["cells"]:
            if cell["cell_type"] != "code":
                continue
            seconds = _seconds(cell.get("metadata", {}).get("papermill", {}))
            source = "".join(cell["source"]).strip().splitlines()
            if seconds is not None and source:
                cells.append((seconds, name, source[0][:70]))
    return stages, sorted(cells, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebooks", default="reports/notebooks")
    parser.add_argument("--cells", type=int, default=8, help="how many of the slowest cells to list")
    args = parser.parse_args()
    stages, cells = stage_times(Path(args.notebooks))
    if not stages:
        raise SystemExit(f"no executed notebooks in {args.notebooks}: run `make repro` first")
    whole = sum(stages.values())
    print(f"{'stage':28s} {'seconds':>8s} {'share':>6s}")
    for name, seconds in stages.items():
        print(f"{name:28s} {seconds:8.0f} {100 * seconds / whole:5.1f}%")
    print(f"{'all stages':28s} {whole:8.0f}")
    print(f"\nslowest cells:")
    for seconds, name, first_line in cells[: args.cells]:
        print(f"{seconds:7.0f} s  {name:24s} {first_line}")


if __name__ == "__main__":
    main()
