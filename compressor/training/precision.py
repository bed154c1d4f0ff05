"""Mixed precision for the training loop: ``torch.autocast`` around the forward pass and the losses, a gradient
scaler for fp16, channels-last memory for convolutional models on CUDA.

``precision`` (``teachers.training.precision``, ``distillation.training.precision``):

* ``fp32``: no autocast; the loop computes exactly as without this module.
* ``bf16``: autocast to bfloat16 (CUDA, or the CPU when asked). bfloat16 has float32's exponent range, so gradients
  need no scaling.
* ``fp16``: autocast to float16 with a ``torch.amp.GradScaler``: the loss is multiplied by a scale before the backward
  pass so small gradients do not flush to zero, the optimiser steps are skipped when a gradient overflowed, and the
  scale adapts (its state goes into the epoch checkpoint). CUDA only.
* ``auto``: bf16 on a CUDA device that supports it, fp16 on an older CUDA device, fp32 on the CPU.

Autocast runs matrix products and convolutions in the low precision and keeps reductions such as softmax and
cross-entropy in float32. The fused KD op receives the student's logits as autocast produced them (bf16 / fp16) and
the teachers' in float32; it accumulates in float32 either way. Parameters, optimiser state and the averaged
student stay float32; evaluation (validation, metrics, export) runs in float32.

On CUDA, models with convolutions are trained in the channels-last memory format (NHWC, what tensor cores want)
and their batches are converted alike; they are put back in the standard format after training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from compressor.training.teacher_inference import is_convolutional


def resolve_precision(name: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``precision: name`` (one of the spec's names) on ``device`` (None: float32, no autocast).

    Raises:
        ValueError: fp16 on the CPU, or bf16 on a CUDA device without bfloat16 support.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    if name == "fp32" or (name == "auto" and not cuda):
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "fp16" and not cuda:
        raise ValueError("precision fp16 needs a CUDA device; on the CPU use bf16 or fp32")
    if name == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16 is not supported by this CUDA device ({torch.cuda.get_device_name(device)}); "
                         "use fp16 or auto")
    return torch.bfloat16 if name == "bf16" else torch.float16


class MixedPrecision:
    """The loop's arithmetic: the autocast context, the scaled backward pass and steps, the memory format.

    Args:
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see the module docstring).
        device: where the loop trains.
        channels_last: train in the channels-last memory format (default: on CUDA, for models with convolutions).
    """

    def __init__(self, precision: str, device: torch.device | str, channels_last: bool | None = None):
        self.device = torch.device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]  # what it computes in
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of the forward pass and the losses (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare(self, models: Iterable[nn.Module]) -> None:
        """Put the convolutional models into the channels-last format (when it is on)."""
        if self.channels_last:
            for model in models:
                if is_convolutional(model):
                    model.to(memory_format=torch.channels_last)

    def finish(self, models: Iterable[nn.Module]) -> None:
        """Put the models back into the standard (contiguous) format after training."""
        if self.channels_last:
            for model in models:
                model.to(memory_format=torch.contiguous_format)

    def inputs(self, x: Tensor) -> Tensor:
        """A batch in the models' memory format."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def backward(self, loss: Tensor) -> None:
        """Back-propagate ``loss`` (scaled in fp16)."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Step every optimiser; in fp16 through the scaler (skipped when a gradient overflowed), then rescale."""
        if self.scaler is None:
            for optimizer in optimizers:
                optimizer.step()
            return
        for optimizer in optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        """The gradient scaler's state (None without one)."""
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue with a saved scaler state (ignored without a scaler)."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
