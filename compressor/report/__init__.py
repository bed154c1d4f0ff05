"""The run report: ``report.md``, self-contained ``report.html`` and PNG plots (``compressor.report.build``).

The package itself imports nothing heavy; matplotlib is loaded with ``compressor.report.build``.
"""
