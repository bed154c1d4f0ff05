"""Where the report lives in a run directory (no heavy imports, so the pipeline can name its outputs)."""

PLOTS_DIR = "plots"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
