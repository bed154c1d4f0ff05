"""FGSM and PGD under L-inf and L2, untargeted, on models that take images in [0, 1].

The models contain their normalisation, so ``eps`` is in pixel units of [0, 1] images. Every adversarial image
satisfies ``||x_adv - x|| <= eps`` in the attack's norm and ``0 <= x_adv <= 1``: the perturbation is projected
onto the eps ball and the image clipped to the box after every step (clipping only moves a coordinate towards
``x``, so it never leaves the ball). Multi-class models are attacked through cross-entropy, multi-label models
through their per-class binary cross-entropy summed over classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from compressor.task import Task

NORMS = ("linf", "l2")
_TINY = 1e-12


def attack_loss(logits: Tensor, labels: Tensor, task: Task) -> Tensor:
    """Per-sample loss the attacker ascends: CE (multiclass) or BCE summed over classes (multilabel)."""
    if task.multilabel:
        return F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").sum(1)
    return F.cross_entropy(logits, labels, reduction="none")


def _per_sample_norm(v: Tensor) -> Tensor:
    """L2 norm of each sample, shaped to broadcast over ``[N, C, H, W]``."""
    return v.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, *([1] * (v.dim() - 1)))


def ascent_direction(grad: Tensor, norm: str) -> Tensor:
    """The unit-norm steepest-ascent direction: sign(g) for L-inf (dual norm L1), g / ||g||_2 for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / _per_sample_norm(grad)


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Euclidean projection of each perturbation onto the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    scale = (eps / _per_sample_norm(delta)).clamp(max=1.0)
    return delta * scale


def random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator) -> Tensor:
    """A perturbation drawn uniformly from the eps ball (L2: Gaussian direction, radius eps * U^(1/d))."""
    shape = x.shape
    if norm == "linf":
        delta = (torch.rand(shape, generator=generator) * 2 - 1) * eps
    else:
        direction = torch.randn(shape, generator=generator)
        direction = direction / _per_sample_norm(direction)
        d = direction[0].numel()
        radius = torch.rand(shape[0], generator=generator).pow(1.0 / d) * eps
        delta = direction * radius.view(-1, *([1] * (len(shape) - 1)))
    return delta.to(x.device, x.dtype)


def _check(norm: str, eps: float) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")


def _loss_and_grad(model: torch.nn.Module, x: Tensor, labels: Tensor, task: Task) -> tuple[Tensor, Tensor, Tensor]:
    """Logits, per-sample loss and d(sum loss)/dx at ``x``; the model's parameters get no gradient."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = attack_loss(logits, labels, task)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return logits.detach(), loss.detach(), grad


def fgsm(model: torch.nn.Module, x: Tensor, labels: Tensor, eps: float, *, norm: str = "linf",
         task: Task = Task.MULTICLASS) -> Tensor:
    """Fast gradient (sign) method: one step of size ``eps`` along the steepest-ascent direction.

    Args:
        model: classifier in eval mode taking images in [0, 1].
        x: clean images ``[N, C, H, W]`` in [0, 1].
        labels: ``int64 [N]`` classes or ``float [N, L]`` 0/1 labels (multilabel).
        eps: radius in pixel units.
        norm: ``"linf"`` (Goodfellow et al. 2015) or ``"l2"`` (fast gradient method).
        task: what the model predicts (the loss ascended and what counts as wrong).

    Returns:
        Adversarial images within the eps ball around ``x`` and inside [0, 1].
    """
    _check(norm, eps)
    _, _, grad = _loss_and_grad(model, x, labels, task)
    return (x + eps * ascent_direction(grad, norm)).clamp(0.0, 1.0).detach()


def pgd(model: torch.nn.Module, x: Tensor, labels: Tensor, eps: float, *, norm: str = "linf",
        task: Task = Task.MULTICLASS, steps: int = 10, step_size: float | None = None, restarts: int = 1,
        random_init: bool = True, generator: torch.Generator, include_fgsm: bool = True) -> Tensor:
    """Projected gradient descent (Madry et al. 2018) with random restarts, worst case per sample.

    Each run starts at ``x`` (plus a uniform point of the ball when ``random_init``), then repeats
    ``delta <- P_ball(delta + step * direction(grad))`` followed by clipping ``x + delta`` to [0, 1]. Over every
    iterate of every restart, each sample keeps the worst one for the model: a misclassified iterate beats a
    correct one, and among equals the higher loss wins. With ``include_fgsm`` the FGSM point (one full step of
    size eps from ``x``) is one more candidate, so PGD is never weaker than FGSM on any sample (small networks
    on tiny images sometimes let a local ascent miss the corner FGSM jumps to).

    Args:
        model: classifier in eval mode taking images in [0, 1].
        x: clean images ``[N, C, H, W]`` in [0, 1].
        labels: ``int64 [N]`` classes or ``float [N, L]`` 0/1 labels (multilabel).
        eps: radius in pixel units.
        norm: ``"linf"`` or ``"l2"``.
        task: what the model predicts (the loss ascended and what counts as wrong).
        steps: iterations per restart.
        step_size: step length in pixel units (default ``2.5 * eps / steps``).
        restarts: independent runs; the worst case over them counts.
        random_init: start each run at a random point of the ball (always true for restarts after the first
            when ``restarts > 1``, else the runs would coincide).
        generator: CPU generator for the random starts (seeded by the caller for reproducibility).
        include_fgsm: also consider the FGSM point (costs one more gradient and forward pass).

    Returns:
        Adversarial images within the eps ball around ``x`` and inside [0, 1].
    """
    _check(norm, eps)
    step = step_size if step_size is not None else 2.5 * eps / steps
    x = x.detach()
    best = x.clone()
    best_wrong = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best_loss = torch.full((len(x),), -float("inf"), device=x.device)
    view = (-1,) + (1,) * (x.dim() - 1)

    def keep_worst(candidate: Tensor, logits: Tensor, loss: Tensor) -> None:
        wrong = ~task.correct(logits, labels)
        better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (loss > best_loss))
        best.copy_(torch.where(better.view(view), candidate, best))
        best_wrong.copy_(best_wrong | wrong)
        best_loss.copy_(torch.where(better, loss, best_loss))

    if include_fgsm:
        candidate = fgsm(model, x, labels, eps, norm=norm, task=task)
        with torch.no_grad():
            logits = model(candidate)
        keep_worst(candidate, logits, attack_loss(logits, labels, task))
    for run in range(restarts):
        delta = random_start(x, eps, norm, generator) if (random_init or run > 0) else torch.zeros_like(x)
        adv = (x + delta).clamp(0.0, 1.0)
        for _ in range(steps):
            logits, loss, grad = _loss_and_grad(model, adv, labels, task)
            keep_worst(adv, logits, loss)
            delta = project(adv + step * ascent_direction(grad, norm) - x, eps, norm)
            adv = (x + delta).clamp(0.0, 1.0)
        with torch.no_grad():
            logits = model(adv)
        keep_worst(adv, logits, attack_loss(logits, labels, task))
    return best.detach()
