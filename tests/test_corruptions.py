"""Common corruptions: valid images out, severity grows the damage, known answers on simple inputs."""

from __future__ import annotations

import pytest
import torch

from compressor.robustness.corruptions import (
    BRIGHTNESS_SHIFT,
    CORRUPTIONS,
    GAUSSIAN_NOISE_STD,
    IMPULSE_NOISE_AMOUNT,
    corrupt,
    disk_kernel,
    gaussian_kernel,
)
from compressor.spec.robustness import CORRUPTION_NAMES


def images(channels: int = 1, n: int = 16, size: int = 16) -> torch.Tensor:
    """Smooth random images in [0, 1] (low-resolution noise up-sampled), so blur and JPEG have edges to damage."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, channels, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_spec_names_match_the_registry():
    assert set(CORRUPTION_NAMES) == set(CORRUPTIONS)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_valid_output_reproducible_and_worse_with_severity(name, channels):
    x = images(channels)
    damage = []
    for severity in range(1, 6):
        out = corrupt(x, name, severity, gen())
        assert out.shape == x.shape and out.dtype == x.dtype
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert torch.equal(out, corrupt(x, name, severity, gen()))  # same generator seed, same corruption
        damage.append(float((out - x).abs().mean()))
    assert damage[0] > 0
    assert damage[4] > damage[0]


def test_gaussian_and_impulse_noise_have_the_stated_strength():
    x = torch.full((64, 1, 32, 32), 0.5)
    noisy = corrupt(x, "gaussian_noise", 3, gen())
    assert float((noisy - x).std()) == pytest.approx(GAUSSIAN_NOISE_STD[2], rel=0.03)
    salted = corrupt(x, "impulse_noise", 5, gen())
    changed = (salted != x).float().mean()
    assert float(changed) == pytest.approx(IMPULSE_NOISE_AMOUNT[4], rel=0.1)
    assert set(torch.unique(salted[salted != x]).tolist()) == {0.0, 1.0}


def test_shot_noise_keeps_the_mean():
    x = torch.full((64, 1, 32, 32), 0.3)
    assert float(corrupt(x, "shot_noise", 5, gen()).mean()) == pytest.approx(0.3, abs=0.01)


def test_blur_kernels_are_normalised_and_keep_constant_images():
    for kernel in (gaussian_kernel(0.8), disk_kernel(1.5, 0.1), disk_kernel(0.3, 0.4)):
        assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-6)
        assert torch.allclose(kernel, kernel.flip(0)) and torch.allclose(kernel, kernel.T)
    flat = torch.full((2, 3, 10, 10), 0.42)
    for name in ("gaussian_blur", "defocus_blur", "contrast", "pixelate"):
        assert torch.allclose(corrupt(flat, name, 5, gen()), flat, atol=1e-6), name


def test_brightness_is_a_shift_of_the_value_channel():
    gray = images(1)
    shifted = corrupt(gray, "brightness", 2, gen())
    assert torch.allclose(shifted, (gray + BRIGHTNESS_SHIFT[1]).clamp(0, 1), atol=1e-6)
    rgb = images(3)
    out = corrupt(rgb, "brightness", 4, gen())
    value, new_value = rgb.amax(1), out.amax(1)
    assert torch.allclose(new_value, (value + BRIGHTNESS_SHIFT[3]).clamp(max=1), atol=1e-5)
    # hue and saturation kept: the channel ratios of every pixel are unchanged
    assert torch.allclose(out / new_value.unsqueeze(1), rgb / value.unsqueeze(1), atol=1e-5)


def test_contrast_pulls_towards_the_image_mean():
    x = images(1)
    out = corrupt(x, "contrast", 5, gen())
    mean = x.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(out - mean, (x - mean) * 0.15, atol=1e-6)


def test_pixelate_makes_blocks():
    x = images(1, size=8)
    out = corrupt(x, "pixelate", 5, gen())  # 8 px -> 5 px -> 8 px: at most 5 distinct rows and columns
    assert all(len(torch.unique(row, dim=0)) <= 5 for row in out[:, 0])


def test_unknown_corruption_and_severity_are_errors():
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(images(), "fog", 1, gen())
    with pytest.raises(ValueError, match="severity must be 1-5"):
        corrupt(images(), "contrast", 6, gen())
