"""Builds the compiled extension ``compressor._C`` from ``csrc/``.

``CUDAExtension`` when a CUDA toolkit is found (``$CUDA_HOME/bin/nvcc``), else ``CppExtension`` (CPU only).
Set ``COMPRESSOR_BUILD_CUDA=0`` to force a CPU-only build. Everything else is declared in ``pyproject.toml``.
"""

import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension


def _cuda_toolkit() -> str | None:
    """The CUDA toolkit folder to build with, or None for a CPU-only build."""
    if os.environ.get("COMPRESSOR_BUILD_CUDA", "auto") == "0":
        return None
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return home
    return None


def _extension():
    cpp_sources = ["csrc/ops.cpp", *sorted(glob.glob("csrc/cpu/*.cpp"))]
    cxx_flags = ["-O3", "-fno-math-errno", "-fopenmp"]
    if _cuda_toolkit():
        nvcc_flags = ["-O3", "--use_fast_math", "--expt-relaxed-constexpr"]
        return CUDAExtension(
            "compressor._C",
            cpp_sources + sorted(glob.glob("csrc/cuda/*.cu")),
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=["-fopenmp"],
        )
    return CppExtension("compressor._C", cpp_sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"])


def _packages() -> list[str]:
    """``compressor`` and its sub-packages, with ``kernels/`` and ``export/`` mapped to ``compressor.kernels/.export``."""
    packages = find_packages(include=["compressor", "compressor.*"])
    for folder in ("kernels", "export"):
        packages += [f"compressor.{folder}"] + [f"compressor.{folder}.{p}" for p in find_packages(folder)]
    return packages


setup(packages=_packages(), ext_modules=[_extension()], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
