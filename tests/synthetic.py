"""Small synthetic data sets in the formats compressor reads (MedMNIST .npz, image folder, CSV manifest).

Images carry a learnable class signal (a bright square whose position depends on the class) plus noise, so a
pipeline run on them reaches well-above-chance accuracy in a few epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def class_images(labels: np.ndarray, size: int = 12, channels: int = 1, seed: int = 0) -> np.ndarray:
    """``uint8`` images ``N x H x W`` (or ``N x H x W x 3``) with a class-dependent bright square."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.integers(0, 60, size=(n, size, size), dtype=np.int64)
    cells = max(1, size // 4)
    for i, label in enumerate(labels):
        row, col = divmod(int(label) % 9, 3)
        images[i, row * cells : row * cells + cells, col * cells : col * cells + cells] += 180
    images = np.clip(images, 0, 255).astype(np.uint8)
    if channels == 3:
        images = np.stack([images, images[:, ::-1], images // 2 + 40], axis=-1)
    return images


def write_npz(
    path: Path,
    *,
    num_classes: int = 4,
    sizes: tuple[int, int, int] = (120, 40, 40),
    image_size: int = 12,
    channels: int = 1,
    multilabel: int = 0,
    groups: bool = False,
    drop_keys: tuple[str, ...] = (),
    seed: int = 0,
) -> Path:
    """A MedMNIST-layout ``.npz``; ``multilabel=L`` writes ``N x L`` 0/1 labels; ``drop_keys`` removes keys."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=False):
        classes = rng.integers(0, num_classes, size=n)
        arrays[f"{split}_images"] = class_images(classes, image_size, channels, seed=seed + n)
        if multilabel:
            labels = (rng.random((n, multilabel)) < 0.2).astype(np.uint8)  # extra co-occurring findings
            labels[np.arange(n), classes % multilabel] = 1
            arrays[f"{split}_labels"] = labels
        else:
            arrays[f"{split}_labels"] = classes.reshape(-1, 1).astype(np.uint8)
        if groups:
            arrays[f"{split}_groups"] = (rng.random(n) < 0.8).astype(np.int64)
    for key in drop_keys:
        arrays.pop(key)
    np.savez(path, **arrays)
    return path


def write_folder(
    root: Path, *, num_classes: int = 3, per_class: int = 20, image_size: int = 12, rgb: bool = False
) -> Path:
    """``root/<class>/<i>.png`` images."""
    for c in range(num_classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        images = class_images(np.full(per_class, c), image_size, 3 if rgb else 1, seed=c)
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


def write_csv(
    root: Path, *, num_classes: int = 3, per_class: int = 20, image_size: int = 12, multilabel: bool = False,
    groups: bool = False,
) -> Path:
    """``root/images/*.png`` and ``root/manifest.csv`` with ``path,label[,group]``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["path,label" + (",group" if groups else "")]
    for c in range(num_classes):
        for i, image in enumerate(class_images(np.full(per_class, c), image_size, 1, seed=c)):
            name = f"images/c{c}_{i}.png"
            Image.fromarray(image).save(root / name)
            label = f"l{c}|l{(c + 1) % num_classes}" if multilabel and i % 2 else f"l{c}"
            lines.append(f"{name},{label}" + (f",{'a' if i % 5 else 'b'}" if groups else ""))
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


FAST_TRAINING = {
    "epochs": 2, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05}, "schedule": {"name": "constant"}
}


def fast_spec(**sections) -> dict:
    """A raw spec that trains tiny models for two epochs: for pipeline tests that must take seconds."""
    spec = {
        "seed": 0,
        "device": "cpu",
        "subsets": {"count": 2, "overlap": 0.5},
        "teachers": {"archs": ["tiny_cnn", "small_cnn"], "training": dict(FAST_TRAINING)},
        "student": {"arch": "tiny_cnn"},
        "distillation": {"training": dict(FAST_TRAINING), "averaging": {"warmup_epochs": 0}},
    }
    for key, value in sections.items():
        spec[key] = value if not isinstance(value, dict) or key not in spec else {**spec[key], **value}
    return spec


def statuses(results) -> dict[str, str]:
    """Stage name -> status (``ran`` / ``skipped``) of a ``run_pipeline`` result list."""
    return {r.name: r.status for r in results}


def errors_of(raw: dict, overrides=()) -> list[str]:
    """The messages of the ``SpecError`` that parsing ``raw`` (with ``overrides``) must raise."""
    import pytest

    from compressor.spec import SpecError, parse_spec

    with pytest.raises(SpecError) as info:
        parse_spec(raw, overrides)
    return info.value.messages
