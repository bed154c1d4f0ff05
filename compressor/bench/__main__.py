"""``python -m compressor.bench kernels|averaging``: the benchmarks without the main CLI (no spec stack needed)."""

from compressor.bench.cli import bench

if __name__ == "__main__":
    bench.main(prog_name="python -m compressor.bench")  # click reads sys.argv[1:]
