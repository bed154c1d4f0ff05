"""MLflow backend (``pip install ".[mlflow]"``): one MLflow run per run directory and run name.

The run is found again by its ``compressor_run`` tag, so the stages of one ``compressor run`` (and a later
``--resume``) log into the same MLflow run; the spec's fields are its parameters, logged when it is created.
``tracking.uri`` is any MLflow tracking URI; ``tracking.dir`` a local folder holding an SQLite store (``mlflow.db``);
neither: MLflow's default (``$MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from compressor.tracking import TrackingError

MAX_PARAM_LENGTH = 500  # the longest parameter value every MLflow store accepts
BATCH = 100  # metrics per log_batch request (the REST API allows 1000)
SEARCH_LIMIT = 1000  # runs one search returns (the most the REST API allows per page)


class MlflowTracker:
    """Logs through ``MlflowClient`` into the run tagged ``compressor_run = run_key`` (created when missing).

    Args:
        uri: the tracking URI (None: MLflow's default).
        experiment: experiment name (created when missing).
        name: the run name.
        run_key: identity of the run (run name and run directory).
        params: the flattened spec, logged when the MLflow run is created.
    """

    def __init__(self, uri: str | None, experiment: str, name: str, run_key: str,
                 params: Mapping[str, str | int | float | bool]):
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
            # MLflow's filter strings cannot escape a quote, and some SQL stores read a backslash in LIKE as an
            # escape: each of these matches as LIKE's any-one-character wildcard (as do the key's own % and _),
            # and the run is the one whose tag is exactly the key
            pattern = re.sub(r"['\"\\]", "_", run_key)
            runs = self.client.search_runs([experiment_id], filter_string=f"tags.compressor_run LIKE '{pattern}'",
                                           max_results=SEARCH_LIMIT)
            mine = [run for run in runs if run.data.tags.get("compressor_run") == run_key]
            if mine:
                self.run_id = mine[0].info.run_id
                return
            self.run_id = self.client.create_run(experiment_id, tags={"compressor_run": run_key},
                                                 run_name=name).info.run_id
            items = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in params.items()]
            for start in range(0, len(items), BATCH):
                self.client.log_batch(self.run_id, params=items[start : start + BATCH])
        except Exception as exc:  # noqa: BLE001 - an unreachable server or a refused store: one line for the user
            raise TrackingError(f"mlflow ({uri or 'default tracking URI'}): {type(exc).__name__}: {exc}") from None

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step) for key, value in values.items()]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, metrics=items[start : start + BATCH])

    def log_final(self, params: Mapping[str, str | int | float | bool], metrics: Mapping[str, float]) -> None:
        self.log_scalars(metrics, step=0)
        self.client.set_terminated(self.run_id, status="FINISHED")

    def close(self) -> None:
        """Nothing to release: every call above is sent when made."""
