"""Projectors: map encoder features into the LLM's embedding space.

`mlp2x_gelu` is LLaVA-1.5's and Bunny's projector (Linear -> GELU -> Linear);
its module indices (0, 2) match Bunny's `mm_projector` checkpoint keys, so the
paper profile loads Bunny's pretrained weights into it unchanged.
"""

from __future__ import annotations

from torch import nn

PROJECTORS = ("mlp2x_gelu", "linear")


def build_projector(name: str, in_features: int, out_features: int) -> nn.Module:
    """(..., in_features) -> (..., out_features)."""
    if name == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(in_features, out_features), nn.GELU(), nn.Linear(out_features, out_features))
    if name == "linear":
        return nn.Linear(in_features, out_features)
    raise ValueError(f"unknown projector: {name!r}; valid names: {', '.join(PROJECTORS)}")
