import copy

import numpy as np
import pytest
import torch

from avlib.builders import build_tiny_siglip
from avlib.model import SIGLIP_PREPROCESS
from avlib.vision_encoder import VisionEncoder, register_tiny_siglip


@pytest.fixture
def encoder(make_model) -> VisionEncoder:
    return make_model().vision_encoder  # 32 px, 8 px patches: 16 patches, width 32


@pytest.mark.parametrize("frames", [1, 2, 7])
def test_token_count_is_frames_plus_patches(encoder, frames):
    video = np.random.default_rng(0).integers(0, 256, (frames, 40, 56, 3), dtype=np.uint8)
    (tokens,) = encoder([video])
    assert encoder.num_patches == 16
    assert tokens.shape == (frames + 16, 32) == (encoder.num_tokens(frames), encoder.width)


def test_spatio_temporal_pooling():
    patches = torch.randn(3, 5, 4)  # T=3 frames, P=5 patches, D=4
    pooled = VisionEncoder.pool(patches)
    assert pooled.shape == (3 + 5, 4)
    torch.testing.assert_close(pooled[:3], patches.mean(dim=1))  # temporal: one token per frame
    torch.testing.assert_close(pooled[3:], patches.mean(dim=0))  # spatial: one token per patch


def test_patch_tokens_come_from_the_second_to_last_block(cfg):
    torch.manual_seed(0)
    clip = build_tiny_siglip(cfg)
    reference = copy.deepcopy(clip.visual.trunk)
    encoder = VisionEncoder(clip.visual, {"size": 32, **SIGLIP_PREPROCESS}, feature_layer=-2)
    assert len(encoder.trunk.blocks) == 2  # the last of 3 blocks is pruned: it is never used
    pixels = torch.randn(2, 3, 32, 32)
    x = reference.norm_pre(reference._pos_embed(reference.patch_embed(pixels)))
    for block in reference.blocks[:-1]:
        x = block(x)
    torch.testing.assert_close(encoder.patch_tokens(pixels), x)


def test_batch_of_clips_matches_clips_alone(encoder):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)
    batch = encoder([a, b])
    torch.testing.assert_close(batch[1], encoder([b])[0], rtol=1e-4, atol=1e-5)


def test_preprocessing_uses_the_model_size_and_normalisation(encoder):
    white = np.full((1, 50, 70, 3), 255, dtype=np.uint8)
    pixels = encoder.preprocess(white)
    assert pixels.shape == (1, 3, 32, 32)
    torch.testing.assert_close(pixels, torch.ones_like(pixels))  # (1 - 0.5) / 0.5


@pytest.mark.parametrize(
    "frames, message",
    [
        (np.zeros((2, 32, 32), dtype=np.uint8), "shape"),
        (np.zeros((0, 32, 32, 3), dtype=np.uint8), "shape"),
        (np.zeros((1, 32, 32, 3), dtype=np.float32), "uint8"),
    ],
)
def test_bad_frames_are_rejected(encoder, frames, message):
    with pytest.raises(ValueError, match=message):
        encoder.preprocess(frames)


def test_feature_layer_out_of_range(cfg):
    clip = build_tiny_siglip(cfg)
    with pytest.raises(ValueError, match=r"feature_layer must be in -3..2"):
        VisionEncoder(clip.visual, {"size": 32, **SIGLIP_PREPROCESS}, feature_layer=3)


def test_tiny_names_are_validated():
    with pytest.raises(ValueError, match="not a miniature SigLIP name"):
        register_tiny_siglip("vit_huge")
    with pytest.raises(ValueError, match="multiple of the patch size"):
        register_tiny_siglip("avg_siglip_w32_d1_h2_p7_s32")
