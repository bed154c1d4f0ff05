"""Reading the weights files users bring: safetensors, or a PyTorch state dict read with ``torch.load`` (weights only).

Accepted contents: a flat mapping of parameter names to tensors (``model.state_dict()``), also when wrapped as
``{"state_dict": ...}`` or ``{"model": ...}`` (common training-script checkpoints), with the ``module.`` prefix of
DistributedDataParallel or the ``_orig_mod.`` prefix of ``torch.compile`` removed. Keys of a compressor classifier
(``backbone.*`` plus its ``mean`` / ``std`` buffers) are split into the backbone's state and its normalisation.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

WRAPPER_KEYS = ("state_dict", "model")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")
BACKBONE_PREFIX = "backbone."
MAX_DETAIL = 200  # characters of a library's error message quoted in ours


class ModelFileError(ValueError):
    """A model or weights file that cannot be used; the message is one line that names the file."""


def one_line(exc: BaseException | str) -> str:
    """An exception's message on one line, at most ``MAX_DETAIL`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a ``.pth`` / ``.pt`` state dict, on the CPU.

    Raises:
        ModelFileError: missing file, unknown suffix, unreadable content, or no mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFileError(f"{path}: not a readable safetensors file ({one_line(exc)})") from None
    elif suffix in (".pth", ".pt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ModelFileError(f"{path}: cannot be read with torch.load(weights_only=True) "
                                 f"({_unpickler_reason(exc)}; save model.state_dict(), not the model)") from None
        except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
            raise ModelFileError(f"{path}: cannot be read with torch.load(weights_only=True) "
                                 f"({one_line(exc)})") from None
    else:
        raise ModelFileError(f"{path}: unsupported weights file type {suffix or '(no suffix)'!r} "
                             "(expected .safetensors, .pth or .pt)")
    return _tensor_mapping(state, path)


def _unpickler_reason(exc: pickle.UnpicklingError) -> str:
    """The reason in torch's long weights-only refusal (it advises loading unsafely; we do not)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        text = text.split(". Please use", 1)[0]
    return one_line(text)


def _tensor_mapping(state: object, path: Path) -> dict[str, torch.Tensor]:
    """``state`` as a flat name -> tensor dict (unwrapped, prefixes removed)."""
    if isinstance(state, dict):
        for key in WRAPPER_KEYS:
            if len(state) <= 3 and isinstance(state.get(key), dict):  # {"state_dict": ..., "epoch": ...}
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelFileError(f"{path}: holds no state dict (a mapping of parameter names to tensors)")
    for prefix in STRIPPED_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def split_classifier_state(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], tuple[list[float], list[float]] | None]:
    """The backbone's state and the stored ``(mean, std)`` normalisation (None when the file has none).

    A compressor classifier's state (``backbone.*``, ``mean``, ``std``) loses its ``backbone.`` prefix; any other
    state is taken as the backbone's as it is. Keys that are neither stay (with their names) for the caller to
    report as unexpected.
    """
    if not any(k.startswith(BACKBONE_PREFIX) for k in state):
        return dict(state), None
    backbone = {k.removeprefix(BACKBONE_PREFIX): v for k, v in state.items() if k not in ("mean", "std")}
    mean, std = state.get("mean"), state.get("std")
    if mean is None or std is None or mean.numel() != std.numel():
        return backbone, None
    return backbone, (mean.flatten().tolist(), std.flatten().tolist())
