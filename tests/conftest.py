"""Test configuration: Triton runs through its interpreter on machines without a GPU (set before any import)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
