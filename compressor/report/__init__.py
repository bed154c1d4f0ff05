"""The run report: ``report.md``, self-contained ``report.html`` and PNG plots (``compressor.report.build``).

The package itself imports nothing heavy; matplotlib is loaded with ``compressor.report.build``.
"""

from compressor.report.paths import PLOTS_DIR, REPORT_HTML, REPORT_MD

__all__ = ["PLOTS_DIR", "REPORT_HTML", "REPORT_MD"]
