"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): PREDICT and CERTIFY with an L2 radius per sample.

The smoothed classifier is ``g(x) = argmax_c P(f(x + d) = c)``, ``d ~ N(0, sigma^2 I)``, with ``f`` the base
model's hard decision. If the top class has probability at least ``pA > 1/2``, ``g`` is constant within the
L2 ball of radius ``sigma * Phi^-1(pA)`` around ``x`` (Theorem 1 with ``pB = 1 - pA``). CERTIFY picks the class
with ``n0`` noise draws, bounds ``pA`` from below with a one-sided Clopper-Pearson interval from ``n`` fresh
draws and abstains when the bound is not above 1/2; the answer is wrong with probability at most ``alpha``.

The theorem holds for any discrete output, so a multi-label model is smoothed over its thresholded label set
(one "class" per set of positive labels): the certificate says the whole set stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import beta, binomtest, norm
from torch import Tensor

from compressor.progress import Bar
from compressor.task import Task

ABSTAIN = -1


def clopper_pearson_lower(successes: np.ndarray | int, trials: int, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower bound of a binomial proportion.

    It is the ``alpha`` quantile of ``Beta(k, n - k + 1)``; 0 when ``k = 0``; ``alpha^(1/n)`` when ``k = n``.
    """
    k = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = beta.ppf(alpha, k, trials - k + 1)
    return np.where(k > 0, bound, 0.0)


def decision_codes(logits: Tensor, task: Task) -> Tensor:
    """The base model's hard output as an int64 code: the class (multiclass), or the bit mask of labels > 0.5."""
    if task.multilabel:
        if logits.shape[1] > 62:
            raise ValueError(f"smoothing supports at most 62 labels, got {logits.shape[1]}")
        bits = torch.arange(logits.shape[1], device=logits.device, dtype=torch.int64)
        return ((logits > 0).to(torch.int64) << bits).sum(1)
    return logits.argmax(1)


def label_codes(labels: np.ndarray, task: Task) -> np.ndarray:
    """The true labels as the codes ``decision_codes`` produces."""
    if task.multilabel:
        bits = np.left_shift(np.int64(1), np.arange(labels.shape[1], dtype=np.int64))
        return ((np.asarray(labels) > 0.5).astype(np.int64) * bits).sum(1)
    return np.asarray(labels, dtype=np.int64)


@torch.no_grad()
def noisy_decisions(model: torch.nn.Module, x: Tensor, num: int, sigma: float, task: Task, *, batch_size: int,
                    generator: torch.Generator, bar: Bar | None = None) -> Tensor:
    """Decision codes of ``model`` on ``num`` Gaussian-noised copies of each image: ``int64 [N, num]``.

    The ``N * num`` noisy inputs are formed batch by batch (a batch may span several images), so memory stays
    at ``batch_size`` images whatever ``num`` is. Noise is drawn on the CPU from ``generator`` (reproducible) and
    not clipped: the certificate is about ``f(x + d)`` for unbounded Gaussian ``d``.
    """
    total = len(x) * num
    out = torch.empty(total, dtype=torch.int64)
    for start in range(0, total, batch_size):
        rows = torch.arange(start, min(start + batch_size, total))
        owner = (rows // num).to(x.device)
        noise = torch.randn((len(rows), *x.shape[1:]), generator=generator).to(x.device, x.dtype)
        out[start : start + len(rows)] = decision_codes(model(x[owner] + sigma * noise), task).cpu()
        if bar is not None:
            bar.advance(len(rows))
    return out.view(len(x), num)


def _mode(row: Tensor) -> tuple[int, int, int]:
    """Most frequent code of a row, its count and the runner-up's count (ties: smallest code)."""
    values, counts = torch.unique(row, return_counts=True)
    order = torch.argsort(counts, descending=True, stable=True)
    top = int(values[order[0]])
    second = int(counts[order[1]]) if len(order) > 1 else 0
    return top, int(counts[order[0]]), second


@dataclass
class Certificate:
    """CERTIFY's answer per sample: code (``ABSTAIN`` = -1), count of the code among n, ``pA_lower``, radius."""

    prediction: np.ndarray
    count: np.ndarray
    p_lower: np.ndarray
    radius: np.ndarray  # NaN where abstained


def certify(model: torch.nn.Module, x: Tensor, *, sigma: float, n0: int, n: int, alpha: float, task: Task,
            batch_size: int, generator: torch.Generator, bar: Bar | None = None) -> Certificate:
    """Cohen et al.'s CERTIFY for each image of ``x``.

    Args:
        model: base classifier in eval mode (images in [0, 1], normalisation inside).
        x: images ``[N, C, H, W]``.
        sigma: noise standard deviation in pixel units.
        n0: selection draws (the guessed top class ``cA`` is their mode).
        n: estimation draws (fresh; ``pA_lower`` comes from the count of ``cA`` among them).
        alpha: failure probability.
        task: what the model predicts (multi-label: its label set is the smoothed output).
        batch_size: noisy inputs per forward pass.
        generator: CPU generator of the noise.
        bar: optional progress bar advanced per noisy input.

    Returns:
        Per-sample predictions (``ABSTAIN`` where ``pA_lower < 1/2``), counts, lower bounds and radii.
    """
    selection = noisy_decisions(model, x, n0, sigma, task, batch_size=batch_size, generator=generator, bar=bar)
    guess = torch.tensor([_mode(row)[0] for row in selection], dtype=torch.int64)
    estimation = noisy_decisions(model, x, n, sigma, task, batch_size=batch_size, generator=generator, bar=bar)
    count = (estimation == guess[:, None]).sum(1).numpy()
    p_lower = clopper_pearson_lower(count, n, alpha)
    abstain = p_lower < 0.5
    prediction = np.where(abstain, ABSTAIN, guess.numpy())
    with np.errstate(invalid="ignore", divide="ignore"):  # radius sigma * Phi^-1(pA_lower), NaN where abstained
        radius = np.where(p_lower >= 0.5, sigma * norm.ppf(p_lower), np.nan)
    return Certificate(prediction, count, p_lower, radius)


def predict(model: torch.nn.Module, x: Tensor, *, sigma: float, n: int, alpha: float, task: Task, batch_size: int,
            generator: torch.Generator, bar: Bar | None = None) -> np.ndarray:
    """Cohen et al.'s PREDICT: the top code when a two-sided binomial test of ``nA`` vs ``nA + nB`` at 1/2 has
    p-value <= ``alpha`` (so the answer differs from ``g(x)`` with probability at most ``alpha``), else ``ABSTAIN``.
    """
    draws = noisy_decisions(model, x, n, sigma, task, batch_size=batch_size, generator=generator, bar=bar)
    out = np.full(len(x), ABSTAIN, dtype=np.int64)
    for i, row in enumerate(draws):
        top, n_a, n_b = _mode(row)
        if binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha:
            out[i] = top
    return out


def certified_accuracy(prediction: np.ndarray, radius: np.ndarray, truth: np.ndarray,
                       radii: list[float]) -> list[float]:
    """Share of samples that are certified correct with a radius of at least ``r``, for each ``r`` in ``radii``.

    Abstentions count as wrong at every radius.
    """
    correct = (np.asarray(prediction) == np.asarray(truth)) & (np.asarray(prediction) != ABSTAIN)
    r = np.nan_to_num(np.asarray(radius, dtype=np.float64), nan=-np.inf)
    return [float(np.mean(correct & (r >= level))) if len(correct) else 0.0 for level in radii]
