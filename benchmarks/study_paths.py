"""The command line the benchmarks that read the study's outputs share: where its parameters, corpus, stage 1's
models and feature cache are (the pipeline's own places by default)."""

from __future__ import annotations

import argparse


def study_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with --params, --data, --foundation and --features; a benchmark adds its own options to it."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data", help="the corpus")
    parser.add_argument("--foundation", default="checkpoints/foundation", help="stage 1's models")
    parser.add_argument("--features", default="features", help="stage 1's feature cache")
    return parser
