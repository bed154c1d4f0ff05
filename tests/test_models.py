"""The architecture registry: every model builds for small images, any channel count, and the right outputs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from compressor.checkpoint import ModelInfo, load_classifier, read_info, save_classifier
from compressor.models import build_classifier, count_parameters, create_model, list_models

EXPECTED = {"small_cnn", "tiny_cnn", "small_cnn_wide", "wrn16_2", "wrn40_2", "resnet18", "resnet34", "resnet50",
            "mobilenet_v2", "densenet121"}


def test_registry_lists_every_architecture():
    assert EXPECTED <= set(list_models())


def test_read_info_rejects_files_that_are_not_checkpoints(tmp_path):
    """Any unreadable content is a ValueError naming the file (callers turn it into a message, resume retrains)."""
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match="garbage.safetensors: not a compressor checkpoint"):
        read_info(garbage)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="plain.safetensors: not a compressor checkpoint"):
        read_info(plain)


def test_builtin_name_list_matches_the_registry():
    """The torch-free name list that spec validation uses equals what the built-in modules register."""
    from compressor.models.registry import _REGISTRY
    from compressor.spec.model_names import BUILTIN_MODELS

    list_models()
    builtin = {name for name, factory in _REGISTRY.items() if factory.__module__.startswith("compressor.models.")}
    assert set(BUILTIN_MODELS) == builtin == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("channels,size", [(1, 8), (3, 28), (2, 16)])
def test_forward_shapes(name, channels, size):
    model = create_model(name, channels, 5, size).eval()
    with torch.no_grad():
        out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_small_image_stems_keep_resolution():
    small = create_model("resnet18", 1, 3, 28)
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, torch.nn.Identity)
    large = create_model("resnet18", 1, 3, 96)
    assert large.conv1.stride == (2, 2) and large.conv1.in_channels == 1
    assert create_model("mobilenet_v2", 3, 3, 28).features[0][0].stride == (1, 1)
    assert isinstance(create_model("densenet121", 3, 3, 28).features.pool0, torch.nn.Identity)


def test_sizes_are_ordered_for_distillation():
    sizes = {n: count_parameters(create_model(n, 1, 10, 8)) for n in ("tiny_cnn", "small_cnn", "wrn16_2", "resnet18")}
    assert sizes["tiny_cnn"] < sizes["small_cnn"] < sizes["wrn16_2"] < sizes["resnet18"]


def test_unknown_model_suggests_close_name():
    with pytest.raises(ValueError, match="did you mean 'wrn40_2'"):
        create_model("wrn40-2", 1, 2, 8)


def test_dropout_is_in_the_head():
    model = create_model("small_cnn", 1, 4, 8, dropout=0.5).train()
    x = torch.rand(8, 1, 8, 8)
    assert not torch.equal(model(x), model(x))  # dropout active in train mode
    model.eval()
    assert torch.equal(model(x), model(x))


def test_normalisation_inside_the_model():
    model = build_classifier("tiny_cnn", 1, 3, 8, mean=[0.5], std=[0.25]).eval()
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(model(x), model.backbone((x - 0.5) / 0.25))


def test_checkpoint_round_trip(tmp_path):
    info = ModelInfo("small_cnn", 1, 4, 8, [0.3], [0.2], "multiclass", ["a", "b", "c", "d"])
    model = info.build().eval()
    save_classifier(model, info, tmp_path / "m.safetensors")
    loaded, loaded_info = load_classifier(tmp_path / "m.safetensors")
    assert loaded_info == info == read_info(tmp_path / "m.safetensors")
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temporary file
