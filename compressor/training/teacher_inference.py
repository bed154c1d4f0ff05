"""How frozen teachers run: evaluation mode, no autograd, the fastest memory layout and precision, large batches.

* ``prepare_teacher``: frozen parameters, evaluation mode (or only the dropout layers active for fickle teachers),
  ``channels_last`` memory format for convolutional models (the layout oneDNN and cuDNN convolutions prefer).
* ``inference``: ``torch.inference_mode`` (no autograd records, no version counters) and, on CUDA, bfloat16
  autocast. The outputs are read back as float32 outside inference mode, so they are ordinary tensors that the KD
  op may keep for its backward pass.
* ``in_chunks``: run a function over ``range(n)`` in the largest chunks that fit: it starts from a size and halves
  it whenever CUDA runs out of memory, retrying the same chunk (CPU memory is not probed: the start size holds).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
CPU_CHUNK = 512  # rows per teacher batch on CPU: past a few hundred rows larger batches stop paying off
CUDA_CHUNK = 8192  # first try on CUDA; halved on out-of-memory


def is_convolutional(model: nn.Module) -> bool:
    """Whether ``model`` has a 2-D convolution (and so gains from the ``channels_last`` layout)."""
    return any(isinstance(module, nn.Conv2d) for module in model.modules())


def prepare_teacher(model: nn.Module, device: torch.device | str, fickle: bool = False) -> nn.Module:
    """Freeze ``model`` on ``device`` for inference (in place; returned for convenience).

    Args:
        model: a trained teacher (any ``nn.Module`` mapping ``[B, C, H, W]`` images to ``[B, classes]`` logits).
        device: where it runs.
        fickle: keep its dropout layers active (the noise-in-KD paper's fickle teacher).

    Raises:
        ValueError: ``fickle`` but the model has no active dropout layer.
    """
    model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    if fickle:  # evaluation mode except the dropout layers (batch-norm statistics are neither used nor changed)
        dropouts = [module for module in model.modules() if isinstance(module, DROPOUT_TYPES)]
        for module in dropouts:
            module.train()
        if not any(module.p > 0 for module in dropouts):
            raise ValueError("fickle teacher: a teacher has no active dropout layer (train the teachers with "
                             "teachers.dropout > 0)")
    if is_convolutional(model):
        model.to(memory_format=torch.channels_last)
    return model


@contextlib.contextmanager
def inference(device: torch.device | str) -> Iterator[None]:
    """``torch.inference_mode``, with bfloat16 autocast on CUDA."""
    on_cuda = torch.device(device).type == "cuda"
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
        yield


def first_chunk(device: torch.device | str) -> int:
    """Rows of the first teacher batch tried on ``device``."""
    return CUDA_CHUNK if torch.device(device).type == "cuda" else CPU_CHUNK


def in_chunks(n: int, size: int, run: Callable[[int, int], None]) -> None:
    """Call ``run(start, stop)`` over ``range(n)`` in chunks of at most ``size`` rows.

    A chunk that runs CUDA out of memory is retried at half the size (down to one row, then the error is raised).
    """
    start = 0
    while start < n:
        stop = min(n, start + size)
        try:
            run(start, stop)
        except torch.OutOfMemoryError:
            if size == 1:
                raise
            torch.cuda.empty_cache()
            size //= 2
            continue
        start = stop
