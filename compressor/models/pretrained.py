"""Loading a weights file into a registry architecture: exactly (an existing teacher) or as a pretrained start.

Both first align the file's key names with the model's: a registry architecture wraps its classifier in
``Sequential(Dropout, Linear)``, so torchvision's ``fc.weight`` / ``classifier.weight`` are read as ``fc.1.weight`` /
``classifier.1.weight``. ``num_batches_tracked`` counters missing from a file (older torchvision files) keep 0.

``load_exact``: every tensor must be there with the model's shape; anything else is an error that lists the
missing keys, the unexpected keys and the shape mismatches (the first few of each).

``load_pretrained``: the same, except for

* the classifier head (the model's last ``nn.Linear``): with another number of outputs (ImageNet's 1000 vs the
  data's classes) it keeps its fresh initialisation;
* the first convolution: with another number of input channels (RGB weights, grey data) its weights are adapted by
  ``adapt_input_channels``; with another kernel (below 64 px the registry replaces the ImageNet 7x7 stride-2 stem
  by a 3x3 stride-1 one) it keeps its fresh initialisation.

Each exception is returned as a note for the log.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import Tensor, nn

from compressor.models.weight_files import ModelFileError

SHOWN = 3  # keys listed per kind of mismatch in an error message


def adapt_input_channels(weight: Tensor, channels: int) -> Tensor:
    """A first-convolution weight ``[O, C, k, k]`` for ``channels`` input channels.

    Every new input channel gets ``sum_c W[:, c] / channels``. An image whose channels are all equal (grey data, or
    grey replicated into RGB) then produces exactly the response the original weights give to that image in the
    original channel count: RGB weights become their sum for one grey channel.
    """
    summed = weight.sum(dim=1, keepdim=True)
    return (summed / channels).repeat(1, channels, *([1] * (weight.dim() - 2))).contiguous()


def align_keys(model_keys: set[str], state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with head keys renamed to the registry's dropout-wrapped heads (``fc.weight`` -> ``fc.1.weight``)."""
    aligned = {}
    for key, value in state.items():
        if key not in model_keys and "." in key:
            prefix, leaf = key.rsplit(".", 1)
            wrapped = f"{prefix}.1.{leaf}"
            if wrapped in model_keys and wrapped not in state:
                key = wrapped
        aligned[key] = value
    return aligned


def _listed(items: list[str]) -> str:
    more = f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _shape(t: Tensor) -> str:
    return "x".join(str(d) for d in t.shape) or "scalar"


def _fit(model: nn.Module, state: dict[str, Tensor], source: str, target: str, fresh: Collection[str] = ()) -> None:
    """Copy ``state`` but the ``fresh`` keys into ``model``, in the model's dtypes, after checking that it fits.

    The ``fresh`` tensors (and ``num_batches_tracked`` counters the file lacks) keep their current values.

    Raises:
        ModelFileError: missing or unexpected keys, or a shape mismatch.
    """
    state = {k: v for k, v in state.items() if k not in fresh}
    full = model.state_dict()
    missing = [k for k in full if k not in state and k not in fresh and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in full]
    shapes = [f"{k} is {_shape(state[k])} in the file, {_shape(full[k])} in the model"
              for k in full if k in state and state[k].shape != full[k].shape]
    # one line naming the file, the model it was to fit and the first few problems of each kind
    parts = [f"{kind}{_listed(keys)}" for kind, keys in
             (("missing keys ", missing), ("unexpected keys ", unexpected), ("shape mismatch: ", shapes)) if keys]
    if parts:
        raise ModelFileError(f"{source}: does not fit {target}: {'; '.join(parts)}")
    full.update({k: v.to(full[k].dtype) for k, v in state.items()})
    model.load_state_dict(full, strict=True)


def load_exact(model: nn.Module, state: dict[str, Tensor], source: str, target: str) -> None:
    """Load ``state`` into ``model``; every tensor must be present with the model's shape.

    Args:
        model: the freshly built backbone.
        state: the file's backbone state (``compressor.models.weight_files.split_classifier_state``).
        source: the file, as named in messages.
        target: what the model is, as named in messages (e.g. ``resnet18 for 1x64x64 images, 2 classes``).

    Raises:
        ModelFileError: missing or unexpected keys, or a shape mismatch.
    """
    _fit(model, align_keys(set(model.state_dict()), state), source, target)


def _named(model: nn.Module, kind: type) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, kind)]


@torch.no_grad()
def load_pretrained(model: nn.Module, state: dict[str, Tensor], source: str, target: str) -> list[str]:
    """Initialise ``model`` from ``state`` as a pretrained start (head, input channels and stem may differ).

    Args and Raises: as ``load_exact``, for every tensor but the head's and the first convolution's.

    Returns:
        One note per tensor group not taken as it is (head re-initialised, channels adapted, stem kept fresh).
    """
    own = model.state_dict()
    state = align_keys(set(own), state)
    notes, fresh = [], set()  # fresh: the model's tensors that keep their initialisation
    linears, convs = _named(model, nn.Linear), _named(model, nn.Conv2d)
    head, conv = linears[-1] if linears else None, convs[0] if convs else None
    if head is not None and f"{head}.weight" in state:
        file_w, model_w = state[f"{head}.weight"], own[f"{head}.weight"]
        if file_w.dim() == 2 and file_w.shape[1] == model_w.shape[1] and file_w.shape[0] != model_w.shape[0]:
            fresh |= {f"{head}.weight", f"{head}.bias"}
            notes.append(f"classifier head {head} re-initialised: the file has {file_w.shape[0]} outputs, the model "
                         f"{model_w.shape[0]}")
    if conv is not None and f"{conv}.weight" in state:
        file_w, model_w = state[f"{conv}.weight"], own[f"{conv}.weight"]
        if file_w.dim() == 4 and file_w.shape[0] == model_w.shape[0] and file_w.shape != model_w.shape:
            if file_w.shape[2:] == model_w.shape[2:]:
                state = {**state, f"{conv}.weight": adapt_input_channels(file_w, model_w.shape[1])}
                notes.append(f"first convolution {conv} adapted from {file_w.shape[1]} to {model_w.shape[1]} input "
                             "channels (weights summed over the file's channels, spread over the model's)")
            else:
                fresh |= {f"{conv}.weight", f"{conv}.bias"}
                notes.append(f"first convolution {conv} kept freshly initialised: the file's is "
                             f"{_shape(file_w)}, the model's {_shape(model_w)} (below 64 px the stem is replaced)")
    _fit(model, state, source, target, fresh)
    return notes
