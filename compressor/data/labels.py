"""Labels checked where they are read: type, range, class count, and classes the training split never shows."""

from __future__ import annotations

import numpy as np

from compressor.data.errors import DataError

MAX_CLASSES = 10_000  # more classes than this need their names (a stray huge label must not size the model)


def labels_from_array(labels: np.ndarray, where: str, count: int) -> tuple[np.ndarray, bool]:
    """MedMNIST labels ``N``, ``N x 1`` (class index) or ``N x L`` (multi-label 0/1) to the internal form.

    Returns:
        ``(labels, multilabel)``: ``int64 [N]`` class indices, or ``float32 [N, L]`` 0/1 targets.

    Raises:
        DataError: a shape, count or value that is not a label (the message names ``where`` and the index).
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biuf":
        raise DataError(f"{where}: labels must be numbers, got {labels.dtype}")
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2:
        raise DataError(f"{where}: labels must be N x 1 or N x L, got shape {labels.shape}")
    if labels.shape[0] != count:
        raise DataError(f"{where}: {labels.shape[0]} labels for {count} images")
    if labels.shape[1] == 0:
        raise DataError(f"{where}: labels of shape {labels.shape} hold no label")
    if labels.dtype.kind == "f":
        finite = np.isfinite(labels).all(axis=1)
        if not finite.all():
            raise DataError(f"{where}[{int(np.flatnonzero(~finite)[0])}]: label is NaN or infinite")
    if labels.shape[1] == 1:
        column = labels[:, 0]
        bad = (np.mod(column, 1) != 0) | (column < 0)
        if bad.any():
            at = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}[{at}]: label {column[at]} is not a class index (a non-negative integer)")
        return column.astype(np.int64), False
    bad = ~np.isin(labels, (0, 1)).all(axis=1)
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where}[{at}]: multi-label targets must be 0/1, found {labels[at][:8].tolist()}")
    return labels.astype(np.float32), True


def group_labels(groups: np.ndarray, where: str, count: int) -> np.ndarray:
    """Optional group labels as ``int64 [N]``: non-negative integers, one per image.

    Raises:
        DataError: a wrong count or a value that is not a group index.
    """
    groups = np.asarray(groups)
    if groups.dtype.kind not in "biuf":
        raise DataError(f"{where}: groups must be numbers, got {groups.dtype}")
    groups = groups.reshape(-1) if groups.ndim == 2 and groups.shape[1] == 1 else groups
    if groups.ndim != 1 or len(groups) != count:
        raise DataError(f"{where}: {groups.shape} groups for {count} images (expected one per image)")
    bad = ~np.isfinite(groups) | (np.mod(groups, 1) != 0) | (groups < 0) if groups.size else np.zeros(0, bool)
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where}[{at}]: group {groups[at]} is not a group index (a non-negative integer)")
    return groups.astype(np.int64)


def class_count(labels: dict[str, np.ndarray], where: dict[str, str], class_names: list[str] | None,
                multilabel: bool) -> int:
    """The number of classes, checked against every label and against the class names when there are any.

    Multiclass: ``len(class_names)`` when names are given, else ``max(label) + 1`` up to ``MAX_CLASSES``. Every label
    must be below it, and a class that appears in val or test must appear in train (a model cannot learn it).

    Args:
        labels: split name -> labels (``int64 [N]`` or ``float32 [N, L]``), train first.
        where: split name -> how messages name its labels (``file:key``).
        class_names: names from the spec or the data set, or None.
        multilabel: whether the labels are ``N x L`` 0/1 targets.

    Raises:
        DataError: labels and names that do not fit together.
    """
    present = {name: values for name, values in labels.items() if len(values)}
    if multilabel:
        widths = {values.shape[1] for values in present.values()}
        if len(widths) > 1:
            raise DataError(f"{', '.join(where.values())}: splits have different label widths {sorted(widths)}")
        count = widths.pop()
        if class_names is not None and len(class_names) != count:
            raise DataError(f"{len(class_names)} class names for {count} labels per image")
        return count
    if class_names is not None:
        count = len(class_names)
        for name, values in present.items():
            bad = np.flatnonzero(values >= count)
            if bad.size:
                raise DataError(f"{where[name]}[{int(bad[0])}]: label {values[bad[0]]} is outside the {count} "
                                "classes named by class_names")
    else:
        top = max(int(values.max()) for values in present.values())
        if top + 1 > MAX_CLASSES:
            name = next(n for n, v in present.items() if int(v.max()) == top)
            at = int(np.flatnonzero(present[name] == top)[0])
            raise DataError(f"{where[name]}[{at}]: label {top} would make {top + 1} classes (more than "
                            f"{MAX_CLASSES}); give the class names (npz key class_names or data.class_names) if the "
                            "classes are real")
        count = top + 1
    seen = set(np.unique(present["train"]).tolist()) if "train" in present else set()
    for name, values in present.items():
        unseen = sorted(set(np.unique(values).tolist()) - seen)
        if unseen:
            at = int(np.flatnonzero(values == unseen[0])[0])
            raise DataError(f"{where[name]}[{at}]: class {unseen[0]} appears in {name} but never in train "
                            "(no model can learn it)")
    return count


def check_class_names(names: object, where: str) -> list[str]:
    """Class names from the data: distinct, non-empty strings.

    Raises:
        DataError: not a list of distinct non-empty names.
    """
    values = [str(v) for v in np.asarray(names).reshape(-1).tolist()]
    if not values or any(not v.strip() for v in values):
        raise DataError(f"{where}: class names must be non-empty strings")
    if len(set(values)) != len(values):
        duplicate = next(v for v in values if values.count(v) > 1)
        raise DataError(f"{where}: class name {duplicate!r} appears twice")
    return values
