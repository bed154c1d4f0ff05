"""Multi-teacher distillation of the student (RoS-KD Eq. 4) with smooth parameter averaging (Eq. 1).

Per batch: ``loss = alpha * mean_b KD[b] + (1 - alpha) * mean_b CE[b]``, where ``KD[b] = tau^2 sum_m w_m
KL(q_m || p)`` comes from the fused op ``compressor.ops.multi_teacher_kd`` and the teacher weights ``w`` follow
``distillation.weighting``. After ``averaging.warmup_epochs`` epochs, each epoch's weights are folded into the
averaged student through ``compressor.ops.average_weights_``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from compressor import ops
from compressor.data.types import Split
from compressor.progress import progress_bar
from compressor.spec.training import DistillSpec
from compressor.training.averaging import WeightAverager
from compressor.training.batches import augment, batch_indices, iterate_inputs, to_float
from compressor.training.losses import labels_tensor, supervised_loss
from compressor.training.optim import build_optimizer, build_scheduler
from compressor.training.supervised import History, batch_accuracy
from compressor.training.weighting import teacher_weights


@torch.no_grad()
def stacked_teacher_logits(teachers: Sequence[torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``[K, B, C]`` logits of the teachers (in whatever train/eval mode the caller left them)."""
    return torch.stack([teacher(x).float() for teacher in teachers])


def distill_student(
    student: torch.nn.Module,
    teachers: Sequence[torch.nn.Module],
    data: Split,
    spec: DistillSpec,
    task: str,
    device: torch.device | str,
    generator: torch.Generator,
    description: str = "distill student",
) -> tuple[History, WeightAverager | None]:
    """Distil ``teachers`` into ``student`` (in place) on ``data`` with the noisy labels for the CE term.

    Returns:
        The per-epoch history (loss, KD and CE parts, share of teacher outputs past the gate) and the averager
        holding the smoothed student (None when averaging is disabled).
    """
    train = spec.training
    student.to(device).train()
    for teacher in teachers:
        teacher.to(device).eval()
    optimizer = build_optimizer(student.parameters(), train.optimizer)
    scheduler = build_scheduler(optimizer, train.schedule, train.epochs)
    mode = "multilabel" if task == "multilabel" else "multiclass"
    averager: WeightAverager | None = None
    history = History()
    steps = -(-len(data) // train.batch_size)
    with progress_bar(description, train.epochs * steps) as bar:
        for epoch in range(train.epochs):
            sums = {"loss": 0.0, "kd": 0.0, "ce": 0.0, "acc": 0.0, "kept": 0.0}
            seen = 0
            for idx in batch_indices(len(data), train.batch_size, generator):
                x = augment(to_float(data.images[idx], device), train.augment, generator)
                y = labels_tensor(data.labels[idx.numpy()], device, task)
                t_logits = stacked_teacher_logits(teachers, x)
                weights = teacher_weights(spec.weighting, len(teachers), generator, spec.single_teacher).to(device)
                s_logits = student(x)
                kd, keep, _ = ops.multi_teacher_kd(
                    s_logits, t_logits, weights, temperature=spec.temperature, gate_threshold=math.inf, mode=mode
                )
                ce = supervised_loss(s_logits, y, task)
                loss = spec.alpha * kd.mean() + (1.0 - spec.alpha) * ce.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n = len(idx)
                sums["loss"] += float(loss.detach()) * n
                sums["kd"] += float(kd.detach().mean()) * n
                sums["ce"] += float(ce.detach().mean()) * n
                sums["acc"] += batch_accuracy(s_logits.detach(), y, task) * n
                sums["kept"] += float(keep.float().mean()) * n
                seen += n
                bar.advance()
            history.loss.append(sums["loss"] / seen)
            history.accuracy.append(sums["acc"] / seen)
            history.lr.append(optimizer.param_groups[0]["lr"])
            history.log(kd=sums["kd"] / seen, ce=sums["ce"] / seen, gate_pass_rate=sums["kept"] / seen)
            bar.note(f"loss {history.loss[-1]:.3f} kd {sums['kd'] / seen:.3f}")
            scheduler.step()
            if spec.averaging.enabled and epoch >= spec.averaging.warmup_epochs:
                averager = averager or WeightAverager(student, spec.averaging.mode, spec.averaging.decay)
                averager.update(student)
    student.eval()
    if spec.averaging.enabled:
        if averager is None:  # warm-up longer than training: the average is the final weights
            averager = WeightAverager(student, spec.averaging.mode, spec.averaging.decay)
            averager.update(student)
        if spec.averaging.recompute_batchnorm:
            averager.recompute_batchnorm(iterate_inputs(data.images, train.batch_size, device))
    return history, averager
