"""Vision encoder: a frozen SigLIP trunk and Video-ChatGPT's spatio-temporal pooling.

Legend: T frames, H x W pixels, S model image size, P patches per frame, D width.

Frames are preprocessed as the SigLIP checkpoint expects (its own size,
interpolation, mean and std), encoded by the open_clip SigLIP vision trunk (a
timm VisionTransformer), and the patch tokens of one chosen block are kept
(paper: the second-to-last, as Bunny). Blocks after it, and the pooling head,
are pruned: they would cost compute for nothing. The (T, P, D) patch tokens
become T + P video tokens:

    temporal tokens  (T, D): the mean over patches of each frame
    spatial tokens   (P, D): the mean over frames of each patch

in that order, as Video-ChatGPT concatenates them (100 + 729 = 829 in the paper).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

FramesInput = torch.Tensor | np.ndarray

# Miniature SigLIP trunks are registered in timm under a name that spells their
# sizes, so an open_clip config that names one can be rebuilt from the name alone.
_TINY_NAME = re.compile(r"avg_siglip_w(\d+)_d(\d+)_h(\d+)_p(\d+)_s(\d+)")


def tiny_siglip_name(width: int, depth: int, heads: int, patch_size: int, image_size: int) -> str:
    """Register (once) a miniature SigLIP ViT in timm and return its name."""
    name = f"avg_siglip_w{width}_d{depth}_h{heads}_p{patch_size}_s{image_size}"
    register_tiny_siglip(name)
    return name


def register_tiny_siglip(name: str) -> None:
    """Make timm know `name` (as written by `tiny_siglip_name`); a no-op if it already does."""
    match = _TINY_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not a miniature SigLIP name (expected avg_siglip_w<W>_d<D>_h<H>_p<P>_s<S>)")
    if timm.models.is_model(name):
        return
    width, depth, heads, patch, size = map(int, match.groups())
    if size % patch:
        raise ValueError(f"image size {size} must be a multiple of the patch size {patch}")
    if width % heads:
        raise ValueError(f"vision width {width} must be divisible by its heads {heads}")

    def build(pretrained: bool = False, **kwargs) -> nn.Module:
        # SigLIP's trunk: no class token, attention-pool (MAP) head.
        args = dict(
            img_size=size, patch_size=patch, embed_dim=width, depth=depth, num_heads=heads,
            class_token=False, global_pool="map",
        )
        return timm.create_model("vit_base_patch16_siglip_224", pretrained=False, **{**args, **kwargs})

    build.__name__ = name
    build.__module__ = __name__
    timm.models.register_model(build)


def register_open_clip_config(model_cfg: dict) -> None:
    """Register the timm trunk that an open_clip model config names, if it is a miniature one."""
    trunk = model_cfg.get("vision_cfg", {}).get("timm_model_name", "")
    if _TINY_NAME.fullmatch(trunk):
        register_tiny_siglip(trunk)


def save_open_clip(clip: nn.Module, model_cfg: dict, preprocess_cfg: dict, folder: str | Path) -> Path:
    """Save an open_clip model in the hub layout that `open_clip.create_model('local-dir:FOLDER')` reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.detach().cpu().contiguous() for k, v in clip.state_dict().items()}, folder / "open_clip_model.safetensors")
    return folder


def preprocess_frames(
    frames: FramesInput,
    size: tuple[int, int],
    mean: torch.Tensor,
    std: torch.Tensor,
    interpolation: str = "bicubic",
    resize_mode: str = "squash",
) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> (T, 3, S, S) float pixels: resized, clamped to [0, 1], normalised.

    mean, std: (1, 3, 1, 1) tensors on the device to compute on.
    """
    frames = torch.as_tensor(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be uint8 of shape (T>0, H, W, 3), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 RGB, got {frames.dtype}")
    x = frames.to(mean.device).permute(0, 3, 1, 2).float() / 255.0
    target = size
    if resize_mode == "shortest":
        scale = max(size[0] / x.shape[2], size[1] / x.shape[3])
        target = (max(size[0], round(x.shape[2] * scale)), max(size[1], round(x.shape[3] * scale)))
    if tuple(x.shape[2:]) != tuple(target):
        antialias = interpolation in ("bilinear", "bicubic")
        x = F.interpolate(x, size=target, mode=interpolation, antialias=antialias, align_corners=False)
    if resize_mode == "shortest":  # centre crop to S x S
        top, left = (x.shape[2] - size[0]) // 2, (x.shape[3] - size[1]) // 2
        x = x[:, :, top : top + size[0], left : left + size[1]]
    return (x.clamp(0, 1) - mean) / std


class VisionEncoder(nn.Module):
    """SigLIP trunk (pruned after `feature_layer`) + spatio-temporal pooling."""

    def __init__(self, visual: nn.Module, preprocess_cfg: dict, feature_layer: int = -2):
        super().__init__()
        trunk = visual.trunk
        depth = len(trunk.blocks)
        if not -depth <= feature_layer < depth:
            raise ValueError(f"feature_layer must be in {-depth}..{depth - 1} for a {depth}-block trunk, got {feature_layer}")
        self.layer_index = feature_layer % depth
        trunk.prune_intermediate_layers([self.layer_index], prune_norm=True, prune_head=True)
        self.trunk = trunk
        size = preprocess_cfg.get("size", visual.image_size)
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.resize_mode = preprocess_cfg.get("resize_mode", "squash")
        if self.resize_mode not in ("squash", "shortest"):
            raise ValueError(f"unsupported resize_mode {self.resize_mode!r}; expected 'squash' or 'shortest'")
        self.interpolation = preprocess_cfg.get("interpolation", "bicubic")
        self.register_buffer("mean", torch.tensor(preprocess_cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess_cfg["std"]).view(1, 3, 1, 1), persistent=False)

    @property
    def width(self) -> int:
        return self.trunk.embed_dim

    @property
    def num_patches(self) -> int:
        return self.trunk.patch_embed.num_patches

    def num_tokens(self, num_frames: int) -> int:
        """Video tokens of a clip of `num_frames` frames: T + P."""
        return num_frames + self.num_patches

    def preprocess(self, frames: FramesInput) -> torch.Tensor:
        """(T, H, W, 3) uint8 RGB -> (T, 3, S, S) normalised pixels, in the trunk's dtype."""
        pixels = preprocess_frames(frames, self.image_size, self.mean, self.std, self.interpolation, self.resize_mode)
        return pixels.to(self.trunk.patch_embed.proj.weight.dtype)

    def patch_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(T, 3, S, S) -> (T, P, D) patch tokens of the chosen block."""
        (tokens,) = self.trunk.forward_intermediates(
            pixels, indices=[self.layer_index], output_fmt="NLC", intermediates_only=True
        )
        return tokens

    @staticmethod
    def pool(tokens: torch.Tensor) -> torch.Tensor:
        """(T, P, D) -> (T + P, D): per-frame means, then per-patch means."""
        return torch.cat([tokens.mean(dim=1), tokens.mean(dim=0)], dim=0)

    def forward(self, videos: list[FramesInput]) -> list[torch.Tensor]:
        """A batch of clips, each (T, H, W, 3) uint8 -> per clip (T + P, D) tokens.

        All frames of the batch go through the trunk together.
        """
        pixels = [self.preprocess(v) for v in videos]
        tokens = self.patch_tokens(torch.cat(pixels))  # (ΣT, P, D)
        return [self.pool(t) for t in tokens.split([p.shape[0] for p in pixels])]
