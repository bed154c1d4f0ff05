"""Robustness evaluation of one model: clean metrics, FGSM/PGD, common corruptions, smoothing, loss landscape.

Every model of a run is evaluated on the same test samples with the same random draws (noise, random starts),
seeded by the spec seed, so the figures of different models are paired comparisons.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import Tensor

from compressor.data.batches import to_float
from compressor.data.stores import ImageStore, take
from compressor.data.types import Split
from compressor.metrics import classification_metrics
from compressor.progress import progress_bar
from compressor.robustness.attacks import fgsm, pgd
from compressor.robustness.corruptions import corrupt
from compressor.robustness.landscape import loss_surface
from compressor.robustness.smoothing import ABSTAIN, certified_accuracy, certify, label_codes, predict
from compressor.seeding import derive_seed, generator
from compressor.spec.robustness import RobustnessSpec
from compressor.task import Task

SUMMARY_KEYS = ("accuracy", "precision", "recall", "f1", "auc")


@dataclass
class EvalData:
    """The test samples a run is certified on, in a seeded order shared by every model.

    Attributes:
        images: ``[N, C, H, W]`` integer test pixels in the seeded order (a store is a view: evaluation reads only
            the first ``samples`` it uses).
        labels: their clean labels.
        index: position of each image in the test split (for the per-sample records).
        task: what the models predict.
        landscape_images: the pixels the loss landscape is averaged over.
        landscape_labels: their labels (noisy ones when the landscape uses the training split).
        window: the data set's pixel window (None: the pixel type's range).
    """

    images: ImageStore
    labels: np.ndarray
    index: np.ndarray
    task: Task
    landscape_images: ImageStore
    landscape_labels: np.ndarray
    window: tuple[float, float] | None = None


def select_data(test: Split, train: Split, task: Task, spec: RobustnessSpec, seed: int) -> EvalData:
    """Seeded permutation of the test split (attacks use its first ``samples``, smoothing its first
    ``smoothing.samples``) and the landscape subset of the split ``landscape.split``."""
    order = np.random.default_rng(derive_seed(seed, "robustness", "samples")).permutation(len(test))
    source = test if spec.landscape.split == "test" else train
    land = np.random.default_rng(derive_seed(seed, "robustness", "landscape")).permutation(len(source))
    land = land[: spec.landscape.samples]
    return EvalData(take(test.images, order), test.labels[order], order, task, take(source.images, land),
                    source.labels[land], test.window)


def _conditional(correct_after: np.ndarray, correct_before: np.ndarray) -> float | None:
    """Accuracy on perturbed inputs among the samples whose clean input was right (None when there is none)."""
    return float(correct_after[correct_before].mean()) if correct_before.any() else None


def _macro_f1(logits: np.ndarray, labels: np.ndarray, task: Task) -> float:
    """Macro F1 alone (as ``classification_metrics`` computes it, without the per-class AUCs)."""
    if task.multilabel:
        return float(f1_score(labels.astype(int), (logits > 0).astype(int), average="macro", zero_division=0))
    return float(f1_score(labels, logits.argmax(1), average="macro", labels=range(logits.shape[1]), zero_division=0))


@torch.no_grad()
def _logits(model: torch.nn.Module, x: Tensor, batch_size: int) -> np.ndarray:
    return torch.cat([model(xb).float().cpu() for xb in x.split(batch_size)]).numpy()


def _distance(adv: Tensor, x: Tensor, norm: str) -> float:
    diff = (adv - x).flatten(1)
    return float((diff.abs().amax(1) if norm == "linf" else diff.norm(dim=1)).max())


def evaluate_attacks(model: torch.nn.Module, x: Tensor, y: Tensor, labels: np.ndarray, clean_correct: np.ndarray,
                     task: Task, spec: RobustnessSpec, seed: int, name: str) -> dict:
    """FGSM / PGD for every norm, method and radius of ``spec.attacks``: metrics after the attack (RoS-KD
    Table II), accuracy conditional on a correct clean input, and the largest perturbation actually used."""
    a = spec.attacks
    plan = [(norm, method, eps) for norm in ("linf", "l2") for eps in getattr(a, f"{norm}_eps") for method in a.methods]
    batch = spec.batch_size
    out: dict = {norm: {m: [] for m in a.methods} for norm in ("linf", "l2") if getattr(a, f"{norm}_eps")}
    with progress_bar(f"attacks {name}", len(plan) * -(-len(x) // batch)) as bar:
        for norm, method, eps in plan:
            gen = generator(seed, "robustness", "pgd", norm, f"{eps:.8g}")
            step = a.step_size if a.step_size is not None else a.step_scale * eps / a.steps
            advs = []
            for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
                if method == "fgsm":
                    advs.append(fgsm(model, xb, yb, eps, norm=norm, task=task))
                else:
                    advs.append(pgd(model, xb, yb, eps, norm=norm, task=task, steps=a.steps, step_size=step,
                                    restarts=a.restarts, random_init=a.random_start, generator=gen))
                bar.advance()
            adv = torch.cat(advs)
            logits = _logits(model, adv, batch)
            metrics = classification_metrics(logits, labels, task)
            out[norm][method].append({
                "eps": eps, **{k: metrics[k] for k in SUMMARY_KEYS},
                "conditional_accuracy": _conditional(task.correct(logits, labels), clean_correct),
                "max_perturbation": _distance(adv, x, norm),
            })
            bar.note(f"{method} {norm} {eps:.4g}: acc {metrics['accuracy']:.3f}")
    return out


def evaluate_corruptions(model: torch.nn.Module, x: Tensor, labels: np.ndarray, clean_correct: np.ndarray, task: Task,
                         spec: RobustnessSpec, seed: int, name: str) -> dict:
    """Accuracy per corruption and severity, conditional accuracy, and mCA (mean over corruptions x severities)."""
    c = spec.corruptions
    table: dict = {}
    with progress_bar(f"corruptions {name}", len(c.names) * len(c.severities)) as bar:
        for corruption in c.names:
            row = {"accuracy": [], "conditional_accuracy": [], "f1": []}
            for severity in c.severities:
                gen = generator(seed, "robustness", "corruption", corruption, severity)
                corrupted = torch.cat([corrupt(xb, corruption, severity, gen) for xb in x.split(spec.batch_size)])
                logits = _logits(model, corrupted, spec.batch_size)
                correct = task.correct(logits, labels)
                row["accuracy"].append(float(correct.mean()))
                row["conditional_accuracy"].append(_conditional(correct, clean_correct))
                row["f1"].append(_macro_f1(logits, labels, task))
                bar.advance()
            row["mean_accuracy"] = float(np.mean(row["accuracy"]))
            table[corruption] = row
            bar.note(f"{corruption}: {row['mean_accuracy']:.3f}")
    conditional = [v for r in table.values() for v in r["conditional_accuracy"] if v is not None]
    return {
        "severities": list(c.severities),
        "mca": float(np.mean([v for r in table.values() for v in r["accuracy"]])),
        "mca_conditional": float(np.mean(conditional)) if conditional else None,
        "table": table,
    }


def evaluate_smoothing(model: torch.nn.Module, x: Tensor, labels: np.ndarray, index: np.ndarray, task: Task,
                       spec: RobustnessSpec, seed: int, name: str) -> dict:
    """CERTIFY (and PREDICT when ``predict_n > 0``) on the first ``smoothing.samples`` samples."""
    s = spec.smoothing
    truth = label_codes(labels, task)
    per_input = s.n0 + s.n + s.predict_n
    with progress_bar(f"smoothing {name}", len(x) * per_input) as bar:
        result = certify(model, x, sigma=s.sigma, n0=s.n0, n=s.n, alpha=s.alpha, task=task, batch_size=s.batch_size,
                         generator=generator(seed, "robustness", "smoothing", "certify"), bar=bar)
        predicted = None
        if s.predict_n > 0:
            predicted = predict(model, x, sigma=s.sigma, n=s.predict_n, alpha=s.alpha, task=task,
                                batch_size=s.batch_size, bar=bar,
                                generator=generator(seed, "robustness", "smoothing", "predict"))
    abstained = result.prediction == ABSTAIN
    certified = result.radius[~abstained]
    levels = certified_accuracy(result.prediction, result.radius, truth, s.radii)
    out = {
        "sigma": s.sigma, "n0": s.n0, "n": s.n, "alpha": s.alpha, "samples": int(len(x)),
        "certified_accuracy": [{"radius": r, "accuracy": acc} for r, acc in zip(s.radii, levels, strict=True)],
        "abstain_rate": float(abstained.mean()),
        "median_radius": float(np.median(certified)) if len(certified) else None,
        "per_sample": {
            "test_index": index.tolist(), "label": truth.tolist(), "prediction": result.prediction.tolist(),
            "count": result.count.tolist(), "p_lower": result.p_lower.tolist(),
            "radius": [None if np.isnan(r) else float(r) for r in result.radius],
        },
    }
    if predicted is not None:
        out["predict"] = {"n": s.predict_n, "accuracy": float(np.mean(predicted == truth)),
                          "abstain_rate": float(np.mean(predicted == ABSTAIN))}
    return out


def evaluate_model(model: torch.nn.Module, data: EvalData, spec: RobustnessSpec, *, seed: int,
                   device: torch.device | str, name: str, smoothing: bool = True, landscape: bool = True) -> dict:
    """Every robustness figure of ``model`` (in eval mode; images in [0, 1]).

    Args:
        model: the classifier to certify.
        data: test samples in the shared seeded order (``select_data``).
        spec: the robustness section.
        seed: the spec seed (drives the random starts, corruption noise, smoothing noise, landscape directions).
        device: where to compute.
        name: model name for the progress bars.
        smoothing: run the randomized-smoothing certificate (if enabled in the spec).
        landscape: compute the loss landscape (if enabled in the spec).

    Returns:
        ``{"clean", "attacks", "corruptions", "smoothing", "landscape", "seconds"}``; disabled parts are None.
    """
    model = model.to(device).eval()
    seconds: dict[str, float] = {}
    x = to_float(data.images[: spec.samples], device, data.window)  # samples None: all
    labels = data.labels[: spec.samples]
    y = data.task.labels_tensor(labels, device)

    start = time.perf_counter()
    clean_logits = _logits(model, x, spec.batch_size)
    clean = classification_metrics(clean_logits, labels, data.task)
    clean_correct = data.task.correct(clean_logits, labels)
    result: dict = {"samples": len(labels), "clean": clean, "attacks": None, "corruptions": None, "smoothing": None,
                    "landscape": None}
    if spec.attacks.methods and (spec.attacks.linf_eps or spec.attacks.l2_eps):
        result["attacks"] = evaluate_attacks(model, x, y, labels, clean_correct, data.task, spec, seed, name)
    seconds["attacks"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    if spec.corruptions.enabled:  # (names holds at least one corruption: the spec requires it)
        result["corruptions"] = evaluate_corruptions(model, x, labels, clean_correct, data.task, spec, seed, name)
    seconds["corruptions"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    if smoothing and spec.smoothing.enabled:
        k = spec.smoothing.samples  # None: all
        xs = to_float(data.images[:k], device, data.window)
        result["smoothing"] = evaluate_smoothing(model, xs, data.labels[:k], data.index[:k], data.task, spec, seed,
                                                 name)
    seconds["smoothing"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    if landscape and spec.landscape.enabled:
        lx = to_float(data.landscape_images[:], device, data.window)
        ly = data.task.labels_tensor(data.landscape_labels, device)
        surface = loss_surface(model, lx, ly, data.task, grid=spec.landscape.grid, span=spec.landscape.span,
                               generator=generator(seed, "robustness", "landscape", "directions"),
                               batch_size=spec.batch_size, description=f"landscape {name}")
        result["landscape"] = {"split": spec.landscape.split, "samples": int(len(lx)), **surface}
    seconds["landscape"] = round(time.perf_counter() - start, 2)
    result["seconds"] = seconds
    return result
