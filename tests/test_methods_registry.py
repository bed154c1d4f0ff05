"""The public extension point: a method registered from Python is used from a spec, end to end."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from compressor.io import read_json
from compressor.methods import Hook, register_method
from compressor.methods.registry import METHODS
from compressor.pipeline import StageError, run_pipeline
from compressor.pipeline.runner import STAGES
from compressor.spec import parse_spec
from tests.method_cases import one_thread  # noqa: F401  (fixture)
from tests.synthetic import FAST_TRAINING, fast_spec


class LogitPenalty(Hook):
    """Toy method: adds ``weight * mean_c z_c^2`` to every row's loss and logs its mean per epoch."""

    def __init__(self, weight: float):
        self.weight = weight

    def loss(self, loop, index, batch, outputs, rows):
        penalty = outputs[index].pow(2).mean(1)
        loop.learners[index].log(logit_penalty=float(penalty.detach().sum()))
        return rows + self.weight * penalty

    def epoch_figures(self, loop, index):
        return {"logit_penalty": loop.learners[index].mean("logit_penalty")}


@pytest.fixture
def toy_method():
    register_method("logit_penalty")(lambda ctx, params: LogitPenalty(**params) if ctx.role == "student" else None)
    yield "logit_penalty"
    del METHODS["logit_penalty"]


def run(tmp_path, name, methods):
    """Baseline I (no teacher: data, distill and metrics stages only) with ``methods`` in the student's loop."""
    spec = parse_spec(fast_spec(method={"preset": "baseline_1"}, export={"onnx": False},
                                robustness={"enabled": False},
                                distillation={"training": {**FAST_TRAINING, "methods": methods}}))
    run_dir = tmp_path / name
    run_pipeline(spec, run_dir, stages=[s for s in STAGES if s.name in ("data", "teachers", "distill", "metrics")])
    return run_dir


def test_a_registered_method_runs_from_the_spec(tmp_path, toy_method):
    plain = run(tmp_path, "plain", [])
    penalised = run(tmp_path, "penalised", [{"name": toy_method, "params": {"weight": 0.5}}])
    history = read_json(penalised / "student" / "summary.json")["history"]
    assert len(history["logit_penalty"]) == 2 and all(v > 0 for v in history["logit_penalty"])
    assert "logit_penalty" not in read_json(plain / "student" / "summary.json")["history"]
    before, after = load_file(plain / "student.safetensors"), load_file(penalised / "student.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the method changed training
    assert set(read_json(penalised / "metrics.json")["test"]) == {"student"}  # the run went on to its metrics


def test_an_unknown_method_is_named(tmp_path):
    with pytest.raises(StageError, match="unknown method.*'no_such_method'"):
        run(tmp_path, "run", [{"name": "no_such_method"}])


def test_a_name_is_registered_once(toy_method):
    with pytest.raises(ValueError, match="already registered"):
        register_method(toy_method)(lambda ctx, params: None)
