"""The report's plots, drawn with matplotlib's object API (Agg canvas, no pyplot state) and written atomically.

Each function takes plain figures (lists, dicts, arrays read from the run directory) and writes one PNG.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from compressor.io import write_bytes

DPI = 110
LANDSCAPE_CLAMP = 8.0  # RoS-KD Figure 4 clamps the loss at 8 for visibility


def _figure(width: float, height: float, rows: int = 1, columns: int = 1) -> tuple[Figure, Any]:
    """A figure on an Agg canvas and its ``rows x columns`` axes (``Figure.subplots``: one Axes, else an array)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, columns)


def _save(fig: Figure, path: str | Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    write_bytes(path, buffer.getvalue())


def training_curves(histories: dict[str, dict], path: str | Path, kept: dict[str, int] | None = None) -> None:
    """Loss and accuracy per epoch of each model (teachers dashed, students solid): on the training labels, and,
    where the histories have them, on the validation labels (a second row; a dot marks the epoch each model kept).

    Args:
        histories: model name -> history (``loss``, ``accuracy``, optionally ``val_loss`` and ``val_accuracy``).
        path: PNG to write.
        kept: model name -> the epoch (1-based) whose weights the model holds (``select``).
    """
    kept = kept or {}
    validated = [name for name, h in histories.items() if h.get("val_loss")]
    rows = 2 if validated else 1
    fig, axes = _figure(10, 3.8 * rows, rows, 2)
    panels = [("loss", "accuracy", "training loss", "accuracy on the (noisy) training labels")]
    if validated:
        panels.append(("val_loss", "val_accuracy", "validation loss (cross-entropy on the given labels)",
                       "accuracy on the (noisy) validation labels"))
    for (loss_key, acc_key, loss_title, acc_title), (loss_ax, acc_ax) in zip(panels, np.atleast_2d(axes), strict=True):
        for index, (name, history) in enumerate(histories.items()):
            if not history.get("loss"):  # a teacher used as it is trained nothing here
                continue
            style = "--" if name.startswith("teacher") else "-"
            colour = f"C{index % 10}"
            for ax, key in ((loss_ax, loss_key), (acc_ax, acc_key)):
                values = history.get(key) or []
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, color=colour, label=name)
                if key.startswith("val_") and name in kept and 1 <= kept[name] <= len(values):
                    ax.plot([kept[name]], [values[kept[name] - 1]], "o", color=colour, markersize=5)
        loss_ax.set(title=loss_title, xlabel="epoch", ylabel="loss")
        acc_ax.set(title=acc_title, xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
        acc_ax.legend(fontsize=8)
    _save(fig, path)


def accuracy_vs_eps(curves: dict[str, dict], clean: dict[str, float], path: str | Path) -> None:
    """Accuracy under attack against eps, one panel per norm; eps 0 is the clean accuracy.

    Args:
        curves: model name -> ``attacks`` figures (``{norm: {method: [{"eps", "accuracy"}, ...]}}``).
        clean: model name -> clean accuracy on the same samples.
        path: PNG to write.
    """
    norms = sorted({norm for attacks in curves.values() for norm in attacks}, key=["linf", "l2"].index)
    fig, axes = _figure(5 * max(1, len(norms)), 3.8, 1, max(1, len(norms)))
    for ax, norm in zip(np.atleast_1d(axes), norms, strict=True):
        for name, attacks in curves.items():
            for method, entries in (attacks.get(norm) or {}).items():
                eps = [0.0] + [e["eps"] for e in entries]
                acc = [clean[name]] + [e["accuracy"] for e in entries]
                ax.plot(eps, acc, "-o" if method == "pgd" else "--s", markersize=3, label=f"{name} {method.upper()}")
        ax.set(title=f"{'L-inf' if norm == 'linf' else 'L2'} attacks", xlabel="eps (pixel units, images in [0, 1])",
               ylabel="accuracy", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def certified_accuracy_curve(models: dict[str, dict], path: str | Path) -> None:
    """Certified accuracy of the smoothed classifier against the L2 radius (a step curve from per-sample radii).

    Args:
        models: model name -> smoothing figures (``per_sample`` with ``prediction``, ``label``, ``radius``; ``sigma``).
        path: PNG to write.
    """
    fig, ax = _figure(6, 3.8)
    curves = {}  # certified radius per sample (-1: wrong or abstained), per model
    for name, s in models.items():
        per = s["per_sample"]
        correct = np.array(per["prediction"]) == np.array(per["label"])
        curves[name] = np.array([r if r is not None and ok else -1.0
                                 for r, ok in zip(per["radius"], correct, strict=True)])
    top = max(float(radii.max(initial=0.0)) for radii in curves.values())
    grid = np.linspace(0, max(top, 1e-3) * 1.1, 200)  # one axis for every model's curve
    for name, radii in curves.items():
        ax.plot(grid, [(radii >= r).mean() for r in grid], label=f"{name} (sigma={models[name]['sigma']:g})")
    ax.set(title="randomized smoothing: certified accuracy", xlabel="L2 radius (pixel units)",
           ylabel="certified accuracy", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def corruption_bars(models: dict[str, dict], path: str | Path) -> None:
    """Mean accuracy over severities for each corruption, grouped bars per model."""
    names = list(next(iter(models.values()))["table"])
    fig, ax = _figure(max(7, 0.9 * len(names) + 2), 4)
    width = 0.8 / len(models)
    x = np.arange(len(names))
    for k, (model, figures) in enumerate(models.items()):
        values = [figures["table"][n]["mean_accuracy"] for n in names]
        ax.bar(x + (k - (len(models) - 1) / 2) * width, values, width, label=f"{model} (mCA {figures['mca']:.3f})")
    ax.set_xticks(x, [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set(title="common corruptions: accuracy (mean over severities)", ylabel="accuracy", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    _save(fig, path)


def confusion_matrix(matrix: np.ndarray, classes: list[str], path: str | Path, title: str) -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), with counts in the cells."""
    counts = np.asarray(matrix)
    rows = counts.sum(1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    side = min(10, 2.5 + 0.45 * len(classes))
    fig, ax = _figure(side + 1, side)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set(title=title, xlabel="predicted", ylabel="true")
    fig.colorbar(image, ax=ax, label="share of the true class")
    _save(fig, path)


def label_counts(table: np.ndarray, labels: list[str], path: str | Path, title: str) -> None:
    """Multi-label outcome counts per label (columns TP, FP, FN, TN) as a heat map."""
    fig, ax = _figure(5, min(10, 1.5 + 0.35 * len(labels)))
    values = np.asarray(table, dtype=float)
    ax.imshow(values, cmap="Blues", aspect="auto")
    ax.set_xticks(range(4), ["TP", "FP", "FN", "TN"])
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(4):
            ax.text(j, i, str(int(values[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if values[i, j] > 0.6 * values.max() else "black")
    ax.set(title=title)
    _save(fig, path)


def label_noise(rates: dict[str, float], transition: np.ndarray | None, classes: list[str], path: str | Path) -> None:
    """Realised label-noise rate per split and per teacher subset; the observed noise transition matrix when the
    clean labels are known (``T[i, j]`` = share of clean class i labelled j)."""
    panels = 2 if transition is not None else 1
    fig, axes = _figure(5 * panels + 1, 4, 1, panels)
    axes = np.atleast_1d(axes)
    ax = axes[0]
    ax.bar(range(len(rates)), list(rates.values()), color=["tab:red" if k in ("train", "val", "test") else "tab:orange"
                                                          for k in rates])
    ax.set_xticks(range(len(rates)), list(rates), rotation=30, ha="right", fontsize=8)
    ax.set(title="share of wrong labels", ylabel="noise rate", ylim=(0, 1))
    if transition is not None:
        image = axes[1].imshow(transition, cmap="Reds", vmin=0, vmax=1)
        axes[1].set_xticks(range(len(classes)), classes, fontsize=7, rotation=45, ha="right")
        axes[1].set_yticks(range(len(classes)), classes, fontsize=7)
        axes[1].set(title="training-label transition (clean -> given)", xlabel="given label", ylabel="clean label")
        fig.colorbar(image, ax=axes[1])
    _save(fig, path)


def loss_landscape(surfaces: dict[str, dict], path: str | Path) -> None:
    """Contours of the loss over the plane of two filter-normalised directions, one panel per model, on the
    same colour scale (clamped at 8 as in RoS-KD Figure 4)."""
    fig, axes = _figure(4.6 * len(surfaces) + 0.8, 4, 1, len(surfaces))
    axes = np.atleast_1d(axes)
    top = min(LANDSCAPE_CLAMP, max(float(np.max(s["loss"])) for s in surfaces.values()))
    low = min(float(np.min(s["loss"])) for s in surfaces.values())
    levels = np.linspace(low, max(top, low + 1e-6), 15)
    for ax, (name, s) in zip(axes, surfaces.items(), strict=True):
        coords = np.asarray(s["coordinates"])
        loss = np.minimum(np.asarray(s["loss"]), LANDSCAPE_CLAMP)
        contour = ax.contourf(coords, coords, loss, levels=levels, cmap="viridis")
        ax.contour(coords, coords, loss, levels=levels, colors="white", linewidths=0.4)
        ax.plot([0], [0], "r+", markersize=10)
        ax.set(title=f"{name} ({s['split']} loss)", xlabel="direction 1", ylabel="direction 2", aspect="equal")
    fig.colorbar(contour, ax=list(axes), label="loss (clamped at 8)")  # every panel shares the last one's levels
    _save(fig, path)


def label_issue_grid(images: np.ndarray, captions: list[str], path: str | Path, columns: int = 8) -> None:
    """The label audit's worst training images, one captioned tile each, worst first.

    Args:
        images: ``float [M, C, H, W]`` pixels in [0, 1] (through the data set's window, as the models see them).
        captions: one caption per image.
        path: where the PNG goes.
        columns: tiles per row.
    """
    count = len(images)
    rows = max(1, -(-count // columns))
    fig, axes = _figure(1.3 * columns, 1.5 * rows, rows, columns)
    axes = np.atleast_1d(axes).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, caption in zip(axes, images, captions, strict=False):  # more axes than images
        tile = np.asarray(image)
        tile = tile[0] if tile.shape[0] == 1 else np.transpose(tile, (1, 2, 0))
        ax.imshow(tile, cmap="gray" if tile.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(caption, fontsize=7)
    _save(fig, path)
