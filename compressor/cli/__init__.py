"""The ``compressor`` command line, one module per command group.

* ``run``: ``run``, ``validate``, ``init`` (the pipeline and its spec);
* ``certify``: ``certify`` and ``report`` (robustness certificate of one model, the run report);
* ``deploy``: ``export``, ``predict`` and ``serve`` (ONNX export, inference, HTTP server);
* ``compressor.bench.cli``: ``bench`` (the kernel micro-benchmarks).

``common`` holds what they share (consoles, the one-line failure exit, the spec loader); ``errors`` turns an
unexpected exception into exit status 1 with one line and a logged traceback. Heavy modules (PyTorch,
onnxruntime, FastAPI) are imported inside the commands, so ``compressor --help`` and ``validate`` stay fast.
"""

from __future__ import annotations

import click

from compressor.bench.cli import bench
from compressor.cli.certify import certify_command, report_command
from compressor.cli.deploy import export_command, predict_command, serve_command
from compressor.cli.errors import ErrorLoggingGroup
from compressor.cli.run import TEMPLATES, init_command, run_command, validate_command


@click.group(cls=ErrorLoggingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="compressor")
def main() -> None:
    """Train teachers on noisy labels, distil a compact robust student, certify it and export it to ONNX."""


for _command in (validate_command, init_command, run_command, certify_command, report_command, export_command,
                 predict_command, serve_command, bench):
    main.add_command(_command)

__all__ = ["TEMPLATES", "main"]
