"""A group-imbalanced variant of scikit-learn's digits, written as a MedMNIST-layout ``.npz`` with ``*_groups``.

Group 0 (majority) holds the digits as they are; group 1 (minority) holds digits with inverted contrast
(``255 - x``), a visual shift a model must learn from few examples, like a rare scanner in a multi-site study.
The minority is ``minority`` (default 10%) of the training and validation splits but half of the test split, so
worst-group accuracy measures the minority fairly. Splits are stratified by class with the given seed (20% test,
10% validation, like the pipeline's own split of the built-in digits).

Usage: ``python benchmarks/quality/group_digits.py OUT.npz [--seed 0] [--minority 0.1]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from compressor.io import atomic_path

TEST_FRACTION, VAL_FRACTION = 0.2, 0.1


def _group_labels(count: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``round(share * count)`` ones (minority) at random positions, zeros elsewhere."""
    groups = np.zeros(count, dtype=np.int64)
    groups[rng.permutation(count)[: int(round(share * count))]] = 1
    return groups


def group_digits_arrays(seed: int = 0, minority: float = 0.1) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz``: ``{train,val,test}_{images,labels,groups}`` (images ``uint8 N x 8 x 8``)."""
    if not 0.0 < minority < 0.5:
        raise ValueError(f"minority must lie in (0, 0.5), got {minority}")
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    everything = np.arange(len(labels))
    rest, test = train_test_split(everything, test_size=TEST_FRACTION, random_state=seed, stratify=labels)
    train, val = train_test_split(rest, test_size=VAL_FRACTION / (1 - TEST_FRACTION), random_state=seed + 1,
                                  stratify=labels[rest])
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, index, share in (("train", train, minority), ("val", val, minority), ("test", test, 0.5)):
        groups = _group_labels(len(index), share, rng)
        split_images = images[np.sort(index)].copy()
        split_images[groups == 1] = 255 - split_images[groups == 1]
        arrays[f"{name}_images"] = split_images
        arrays[f"{name}_labels"] = labels[np.sort(index)].reshape(-1, 1)
        arrays[f"{name}_groups"] = groups
    return arrays


def write_group_digits(path: str | Path, seed: int = 0, minority: float = 0.1) -> Path:
    """Write the group-imbalanced digits ``.npz`` to ``path`` atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **group_digits_arrays(seed, minority))
    return path


def main() -> None:
    """Command line: write the file and print the minority count of each split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the .npz file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minority", type=float, default=0.1, help="minority share of train/val (test: 0.5)")
    args = parser.parse_args()
    path = write_group_digits(args.out, args.seed, args.minority)
    with np.load(path) as arrays:
        counts = {s: int(arrays[f"{s}_groups"].sum()) for s in ("train", "val", "test")}
        sizes = {s: len(arrays[f"{s}_groups"]) for s in ("train", "val", "test")}
    print(f"wrote {path}: minority / total per split: " + ", ".join(f"{s} {counts[s]}/{sizes[s]}" for s in sizes))


if __name__ == "__main__":
    main()
