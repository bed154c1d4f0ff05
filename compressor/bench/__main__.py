"""``python -m compressor.bench kernels|averaging``: the benchmarks without the main CLI (no spec stack needed)."""

from compressor.bench.cli import main

if __name__ == "__main__":
    main()
