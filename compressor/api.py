"""The Python API beside the command line: load a spec, run the pipeline, read its results back.

``compressor run spec.yaml`` and ``compressor.run("spec.yaml")`` do the same work; the function returns what the
command prints (stage outcomes, metrics, where the exported model is) as a ``RunResult`` instead of exiting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from compressor.io import read_json
from compressor.run_layout import RunLayout
from compressor.spec import Spec, load_spec, parse_spec


@dataclass(frozen=True)
class RunResult:
    """What one pipeline run produced.

    Attributes:
        run_dir: the run directory.
        stages: stage name -> ``ran`` | ``skipped`` | ``disabled``.
        seconds: stage name -> wall time of the stages that ran.
        metrics: the contents of ``metrics.json`` (empty when the metrics stage is disabled).
    """

    run_dir: Path
    stages: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @property
    def layout(self) -> RunLayout:
        """Paths of every artifact of this run (``layout.onnx``, ``layout.report`` ...)."""
        return RunLayout(self.run_dir)

    @property
    def onnx_path(self) -> Path | None:
        """The exported fp32 student, when the export stage wrote one."""
        path = self.layout.onnx
        return path if path.exists() else None


def run(spec: Spec | str | Path | Mapping, run_dir: str | Path | None = None, *, overrides: Sequence[str] = (),
        resume: bool = False) -> RunResult:
    """Run the pipeline of ``spec`` in this process and return its results.

    Args:
        spec: a ``Spec``, the path of a YAML spec, or a dict with the spec's fields.
        run_dir: the run directory (default: the spec's ``output_dir``).
        overrides: ``KEY=VALUE`` strings, as ``--set`` takes them (``"seed=3"``).
        resume: continue interrupted training from its epoch checkpoints.

    Returns:
        The stages' outcomes and the run's metrics.

    Raises:
        SpecError: the spec is invalid. DataError: the data cannot be used. StageError: a stage failed for a
        reason the user can act on. A failed robustness gate is recorded in ``certificate.json``; it does not raise.
    """
    from compressor.pipeline import run_pipeline
    from compressor.spec import check_output_dir

    if isinstance(spec, Spec):
        resolved = parse_spec(spec.model_dump(mode="json"), overrides) if overrides else spec
    elif isinstance(spec, (str, Path)):
        resolved = load_spec(spec, overrides)
    else:
        resolved = parse_spec(dict(spec), overrides)
    target = Path(run_dir) if run_dir is not None else resolved.output_dir
    check_output_dir(target)
    results = run_pipeline(resolved, target, resume=resume)
    metrics_path = RunLayout(target).metrics
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    return RunResult(
        run_dir=target.resolve(),
        stages={r.name: r.status for r in results},
        seconds={r.name: r.seconds for r in results if r.status == "ran"},
        metrics=metrics,
    )
