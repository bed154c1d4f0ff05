"""Weights files into registry architectures: exact teachers, pretrained starts (head re-initialised, grey data from
RGB weights, stems below 64 px), the normalisation that goes with them, and one-line errors naming the file."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torchvision import models as tvm

from compressor.checkpoint import ModelInfo, save_classifier
from compressor.model_files import registry_from_file, weights_arch
from compressor.models.normalization import IMAGENET_MEAN, IMAGENET_STD
from compressor.models.pretrained import adapt_input_channels
from compressor.models.weight_files import ModelFileError, read_state_dict
from compressor.spec.model_files import PretrainedSpec, TeacherModelSpec
from compressor.task import Task


def info(arch="small_cnn", channels=1, size=8, classes=4) -> ModelInfo:
    return ModelInfo(arch, channels, classes, size, [0.3] * channels, [0.2] * channels, Task.MULTICLASS,
                     [str(c) for c in range(classes)])


def start(path, **fields) -> PretrainedSpec:
    return PretrainedSpec(path=path, **fields)


@pytest.fixture(scope="module")
def torchvision_pth(tmp_path_factory):
    """A torchvision ResNet-18 state dict (RGB, 1000 classes) saved with torch.save, as users download it."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(tvm.resnet18(weights=None).state_dict(), path)
    return path


def test_torchvision_weights_start_a_grey_64px_model(torchvision_pth):
    """ImageNet stem kept at 64 px, RGB first convolution summed for one channel, 1000-class head re-initialised,
    everything else taken as it is, ImageNet normalisation (RGB average for grey)."""
    file = torch.load(torchvision_pth, weights_only=True)
    model, chosen, notes = registry_from_file(info("resnet18", 1, 64, 3), start(torchvision_pth), torchvision_pth,
                                              exact=False)
    own = model.backbone.state_dict()
    assert torch.allclose(own["conv1.weight"], file["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(own["layer4.1.bn2.running_var"], file["layer4.1.bn2.running_var"])
    assert torch.equal(own["layer2.0.downsample.0.weight"], file["layer2.0.downsample.0.weight"])
    assert own["fc.1.weight"].shape == (3, 512)  # fresh head for the data's classes
    assert chosen.mean == [pytest.approx(sum(IMAGENET_MEAN) / 3)]
    assert chosen.std == [pytest.approx(sum(IMAGENET_STD) / 3)]
    assert any("head fc.1 re-initialised: the file has 1000 outputs, the model 3" in n for n in notes)
    assert any("conv1 adapted from 3 to 1 input channels" in n for n in notes)
    rgb, chosen, notes = registry_from_file(info("resnet18", 3, 64, 1000), start(torchvision_pth), torchvision_pth,
                                            exact=False)
    assert all(torch.equal(rgb.backbone.state_dict()[k.replace("fc.", "fc.1.")], v) for k, v in file.items())
    assert chosen.mean == list(IMAGENET_MEAN) and notes == ["input normalisation: imagenet"]


def test_grey_adaptation_keeps_the_response_to_grey_images():
    """Summed weights on a grey image = the RGB weights on that image replicated into three channels."""
    conv = torch.nn.Conv2d(3, 5, 3, bias=False)
    grey = torch.rand(2, 1, 9, 9)
    adapted = torch.nn.functional.conv2d(grey, adapt_input_channels(conv.weight.detach(), 1))
    assert torch.allclose(adapted, conv(grey.repeat(1, 3, 1, 1)), atol=1e-5)
    back = torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1), adapt_input_channels(adapted.new_ones(5, 1, 3, 3), 3))
    assert torch.allclose(back, torch.nn.functional.conv2d(grey, adapted.new_ones(5, 1, 3, 3)), atol=1e-5)


def test_below_64px_the_replaced_stem_starts_fresh(torchvision_pth):
    model, chosen, notes = registry_from_file(info("resnet18", 3, 32, 1000), start(torchvision_pth),
                                              torchvision_pth, exact=False)
    assert model.backbone.conv1.weight.shape == (64, 3, 3, 3)
    assert any("conv1 kept freshly initialised" in n and "64x3x7x7" in n for n in notes)
    assert chosen.mean == [0.3] * 3  # the small-image stem is not ImageNet's: the data's statistics


def test_compressor_checkpoint_as_teacher_keeps_its_normalisation(tmp_path):
    source = info("small_cnn")
    source.mean, source.std = [0.5], [0.25]
    model = source.build()
    save_classifier(model, source, tmp_path / "t.safetensors")
    assert weights_arch(tmp_path / "t.safetensors", None) == "small_cnn"
    entry = TeacherModelSpec(path=tmp_path / "t.safetensors")
    loaded, chosen, _ = registry_from_file(info("small_cnn"), entry, entry.path, exact=True)
    assert chosen.mean == [0.5] and chosen.std == [0.25]
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded.eval()(x), model.eval()(x))
    with pytest.raises(ModelFileError, match="t.safetensors: holds a small_cnn checkpoint, not tiny_cnn"):
        weights_arch(tmp_path / "t.safetensors", "tiny_cnn")


def test_users_state_dict_teacher_with_the_data_normalisation(tmp_path):
    """``model.state_dict()`` of a bare registry model, wrapped by a training script and saved by DDP."""
    torch.manual_seed(0)
    bare = info().build().backbone
    path = tmp_path / "user.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in bare.state_dict().items()}, "epoch": 3}, path)
    entry = TeacherModelSpec(path=path, arch="small_cnn")
    model, chosen, _ = registry_from_file(info(), entry, path, exact=True)
    assert chosen.mean == [0.3]  # auto: small_cnn is no ImageNet architecture, so the data's statistics
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(model.eval()(x), bare.eval()((x - 0.3) / 0.2), atol=1e-6)


def test_mismatched_weights_list_what_does_not_fit(tmp_path):
    path = tmp_path / "wide.safetensors"
    save_file(info("small_cnn_wide").build().backbone.state_dict(), str(path))
    entry = TeacherModelSpec(path=path, arch="small_cnn")
    with pytest.raises(ModelFileError) as error:
        registry_from_file(info(), entry, path, exact=True)
    message = str(error.value)
    assert message.startswith(f"{path}: does not fit small_cnn for 1x8x8 images with 4 outputs: shape mismatch: ")
    assert "features.0.0.weight is 48x1x3x3 in the file, 16x1x3x3 in the model" in message and "(+" in message
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2), "features.0.0.weight": torch.zeros(16, 1, 3, 3)}, str(other))
    with pytest.raises(ModelFileError, match=r"missing keys features\.0\.1\.weight, .*\(\+\d+ more\); unexpected "
                                             r"keys encoder\.weight"):
        registry_from_file(info(), TeacherModelSpec(path=other, arch="small_cnn"), other, exact=True)
    with pytest.raises(ModelFileError, match="does not fit"):  # a pretrained start only forgives head and stem
        registry_from_file(info(), start(other), other, exact=False)


@pytest.mark.parametrize("name, content, expected", [
    ("missing.safetensors", None, "missing.safetensors: weights file not found"),
    ("bad.safetensors", b"\x00" * 12, "bad.safetensors: not a readable safetensors file"),
    ("bad.pth", b"\x80\x02garbage", "bad.pth: cannot be read with torch.load(weights_only=True)"),
    ("module.pth", "module", "module.pth: cannot be read with torch.load(weights_only=True) (Unsupported global"),
    ("empty.pt", "dict", "empty.pt: holds no state dict"),
])
def test_unreadable_weights_are_one_line_errors_naming_the_file(tmp_path, name, content, expected):
    path = tmp_path / name
    if content == "module":
        torch.save(torch.nn.Linear(2, 2), path)  # the whole module, not its state dict
    elif content == "dict":
        torch.save({"epoch": 3, "lr": 0.1}, path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError) as error:
        read_state_dict(path)
    assert str(error.value).startswith(str(tmp_path)) and expected in str(error.value)
    assert "\n" not in str(error.value) and "weights_only=False" not in str(error.value)
