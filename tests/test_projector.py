import pytest
import torch

from avlib.projector import build_projector


def test_mlp2x_gelu_shapes_and_bunny_key_layout():
    projector = build_projector("mlp2x_gelu", 12, 20)
    assert projector(torch.randn(3, 5, 12)).shape == (3, 5, 20)
    # Bunny's mm_projector checkpoint keys: Linear at 0, GELU at 1, Linear at 2.
    assert sorted(projector.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert isinstance(projector[1], torch.nn.GELU)


def test_linear_projector():
    assert build_projector("linear", 12, 20)(torch.randn(7, 12)).shape == (7, 20)


def test_unknown_projector_lists_valid_names():
    with pytest.raises(ValueError, match="unknown projector: 'mlp3x'.*mlp2x_gelu, linear"):
        build_projector("mlp3x", 4, 4)
