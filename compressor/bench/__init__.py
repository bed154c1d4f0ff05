"""Micro-benchmarks of the two fused ops (``multi_teacher_kd`` and ``average_weights_``).

``compressor bench kernels`` and ``compressor bench averaging`` (group ``compressor.bench.cli.bench``) print the
tables that ``benchmarks/RESULTS.md`` records; ``benchmarks/`` holds the matching pytest-benchmark suite.
Nothing here imports the spec stack (pydantic, yaml), so it runs on a bare torch + click machine.
"""
