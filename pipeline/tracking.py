"""MLflow tracking of stage runs through an explicit client (no fluent global run state)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# MLflow caps a batch at 1000 metrics / 100 params / 100 tags.
_PARAM_BATCH = 100
_METRIC_BATCH = 1000
_DEFAULT_PARAM_LEN = 500


def default_tracking_uri(project_root: str | Path = ".") -> str:
    """$MLFLOW_TRACKING_URI if set, else the embedded SQLite store under the project."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(project_root).resolve() / 'mlflow.db'}"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys; lists become their string form."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _max_param_length() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        return int(MAX_PARAM_VAL_LENGTH)
    except Exception:  # older/newer layouts: fall back to the smallest limit ever used
        return _DEFAULT_PARAM_LEN


@dataclass
class Tracker:
    """One MLflow run; every method is a no-op when tracking is disabled (run_id None)."""

    client: Any = None
    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    _t0: float = field(default_factory=time.time)

    @classmethod
    def start(
        cls,
        enabled: bool,
        uri: str | None,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str],
        artifact_location: str | None = None,
        parent_run_id: str | None = None,
        project_root: str | Path = ".",
    ) -> Tracker:
        if not enabled:
            return cls()
        from mlflow.tracking import MlflowClient

        uri = uri or default_tracking_uri(project_root)
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            if artifact_location is None and uri.startswith("sqlite:"):
                artifact_location = (Path(project_root).resolve() / "mlartifacts").as_uri()
            try:
                exp_id = client.create_experiment(experiment, artifact_location=artifact_location)
            except Exception:
                # another job created it concurrently
                exp = client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        all_tags = dict(tags)
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
        return cls(client=client, run_id=run.info.run_id, experiment_id=exp_id, tracking_uri=uri)

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        limit = _max_param_length()
        items = [Param(k, str(v)[:limit]) for k, v in flatten(params).items()]
        for i in range(0, len(items), _PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _PARAM_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, int(step))
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for i in range(0, len(items), _METRIC_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _METRIC_BATCH])

    def log_metric_series(self, name: str, values: Mapping[int, float]) -> None:
        """One metric over steps (e.g. per paper timestep t)."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(name, float(v), now, int(s)) for s, v in values.items() if math.isfinite(float(v))]
        for i in range(0, len(items), _METRIC_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _METRIC_BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if not self.enabled:
            return
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled:
            self.client.set_terminated(self.run_id, status=status)
