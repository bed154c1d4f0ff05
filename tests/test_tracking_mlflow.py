"""The MLflow backend against MLflow's own client and SQLite store (``tracking.dir``): one MLflow run per run directory
and run name, found again by every stage and by ``--resume`` whatever characters the run directory's path holds."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from compressor import tracking
from compressor.spec import parse_spec
from compressor.tracking.mlflow_backend import BATCH, MAX_PARAM_LENGTH, MlflowTracker
from tests.synthetic import fast_spec


@pytest.fixture()
def store(tmp_path):
    """A tracking URI of a fresh SQLite store."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


# quotes, a backslash (an escape in some SQL stores' LIKE) and LIKE's own wildcards
AWKWARD_KEYS = ["run@/data/o'brien/run", 'run@/data/say "hi"/run', "run@C:\\runs\\x_1", "run@/data/100%/a_b"]


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_a_run_is_found_again_by_its_exact_key(store, key):
    first = MlflowTracker(store, "exp", "run", key, {"a": 1})
    again = MlflowTracker(store, "exp", "run", key, {"a": 1})
    assert again.run_id == first.run_id
    # a key the pattern also matches (each awkward character replaced by another) is a different run
    lookalike = "".join("z" if ch in "'\"\\%_" else ch for ch in key)
    other = MlflowTracker(store, "exp", "run", lookalike, {"a": 1})
    assert other.run_id != first.run_id
    assert MlflowTracker(store, "exp", "run", key, {"a": 1}).run_id == first.run_id
    assert MlflowTracker(store, "exp", "run", lookalike, {"a": 1}).run_id == other.run_id


def test_params_metrics_and_status_are_logged_in_batches(store):
    params = {f"p{i:03d}": i for i in range(BATCH + 7)} | {"long": "x" * (MAX_PARAM_LENGTH + 10)}
    tracker = MlflowTracker(store, "exp", "run", "key", params)
    tracker.log_scalars({f"m{i:03d}": i / 2 for i in range(BATCH + 3)}, step=4)
    tracker.log_final({}, {"student/test_accuracy": 0.75})
    run = MlflowClient(tracking_uri=store).get_run(tracker.run_id)
    assert len(run.data.params) == len(params)
    assert run.data.params["long"] == "x" * MAX_PARAM_LENGTH
    assert run.data.metrics[f"m{BATCH + 2:03d}"] == (BATCH + 2) / 2
    assert run.data.metrics["student/test_accuracy"] == 0.75
    assert run.info.status == "FINISHED"
    history = MlflowClient(tracking_uri=store).get_metric_history(tracker.run_id, "m000")
    assert [m.step for m in history] == [4]
    # the stage that opens the run again (or --resume) does not log the parameters a second time
    MlflowTracker(store, "exp", "run", "key", {"new": 1})
    assert "new" not in MlflowClient(tracking_uri=store).get_run(tracker.run_id).data.params


def test_open_tracker_keeps_one_run_per_run_directory_in_tracking_dir(tmp_path):
    spec = parse_spec(fast_spec(tracking={"backend": "mlflow", "dir": str(tmp_path / "ml")})).model_dump(mode="json")
    run_dir = tmp_path / "it's a run"
    first = tracking.open_tracker(spec, run_dir)
    assert (tmp_path / "ml" / "mlflow.db").is_file()
    assert tracking.open_tracker(spec, run_dir).run_id == first.run_id
    assert tracking.open_tracker(spec, tmp_path / "another run").run_id != first.run_id


def test_an_unreachable_server_is_one_tracking_error(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's default retries for about 4 minutes
    with pytest.raises(tracking.TrackingError) as caught:
        MlflowTracker("http://127.0.0.1:9", "exp", "run", "key", {})
    message = str(caught.value)
    assert message.startswith("mlflow (http://127.0.0.1:9): ")
    assert "\n" not in message
