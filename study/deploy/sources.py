"""Where the network to export or benchmark comes from: a trial's MLflow run (its student
checkpoint, or the graph `srstudy export` logged), the Pareto-best run of a study
(`analysis.select.best_run`), or a bare checkpoint.

    source = load_source(run_id=…) | load_source(best=True, workdir=…) | load_source(checkpoint=…)
    graph = onnx_for_run(tracking_uri, run_id)     # bytes: the nodes need not share a filesystem
    graph, run_id, tracking_uri = bench_graph(best=True, workdir=…)   # or onnx=…, run_id=…

The MLflow layout of an export (written by `deploy.export.log_export`): the fp32 graph in
the `mlflow.onnx` flavour as `onnx_model/`, everything else under `export/`; a trial's
student is its artifact `student/student.pth`.
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..workdir import StudyDir, missing_store
from .onnx import ONNX_FP16_FILE, ExportError, export_onnx, read_onnx

if TYPE_CHECKING:
    from srstudy.analysis.select import BestRun

log = logging.getLogger(__name__)

MLFLOW_MODEL_DIR = "onnx_model"  # mlflow.onnx flavour, in the run's artifacts
EXPORT_ARTIFACT_DIR = "export"
STUDENT_ARTIFACT = "student/student.pth"

Say = Callable[[str], None]


@dataclass
class ModelSource:
    """A network to export, and the MLflow run it belongs to (None for a bare checkpoint)."""

    model: torch.nn.Module
    description: str
    run_id: str | None = None
    tracking_uri: str | None = None
    checkpoint: str | None = None
    best: dict[str, Any] | None = None  # how --best chose the run

    def to_dict(self) -> dict[str, Any]:
        return {"description": self.description, "run_id": self.run_id, "tracking_uri": self.tracking_uri,
                "checkpoint": self.checkpoint, "best": self.best,
                "config": self.model.cfg.to_dict() if hasattr(self.model, "cfg") else None,
                "params": int(sum(p.numel() for p in self.model.parameters()))}


def _get_run(tracking_uri: str, run_id: str):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    missing = missing_store(tracking_uri)
    if missing:
        raise ExportError(f"{missing}; pass the study's --workdir, or --tracking-uri URI")
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        return client, client.get_run(run_id)
    except MlflowException as e:
        raise ExportError(f"no MLflow run {run_id!r} at {tracking_uri} ({e.error_code}); check the id "
                          "(`srstudy pareto` lists them) and --workdir/--tracking-uri") from None


def download_artifact(tracking_uri: str, run_id: str, path: str, dst: str | Path) -> Path | None:
    """The run's artifact `path`, downloaded under `dst`; None when the run has no such file."""
    from mlflow.exceptions import MlflowException

    client, _ = _get_run(tracking_uri, run_id)
    try:
        local = Path(client.download_artifacts(run_id, path, str(dst)))
    except (MlflowException, OSError):
        return None
    return local if local.is_file() else None


def student_checkpoint(tracking_uri: str, run_id: str, dst: str | Path) -> Path:
    """The trial's student checkpoint: its artifact `student/student.pth`, else the file in
    the trial folder the run's `trial_dir` tag names."""
    _, run = _get_run(tracking_uri, run_id)
    local = download_artifact(tracking_uri, run_id, STUDENT_ARTIFACT, dst)
    if local is not None:
        return local
    trial_dir = run.data.tags.get("trial_dir")
    if trial_dir and (Path(trial_dir) / "artifacts" / "student.pth").is_file():
        return Path(trial_dir) / "artifacts" / "student.pth"
    raise ExportError(f"MLflow run {run_id} has no student checkpoint (artifact {STUDENT_ARTIFACT}, or "
                      f"<trial_dir>/artifacts/student.pth; tags: role={run.data.tags.get('role')!r}, "
                      f"trial_dir={trial_dir!r}); is it a finished trial run?")


def pick_run(*, run_id: str | None = None, best: bool = False, workdir: str | Path | None = None,
             tracking_uri: str | None = None, experiment: str | None = None,
             objectives: str | Sequence[str] | None = None, say: Say = log.info) -> tuple[str | None, str, BestRun | None]:
    """(run id, tracking URI, how --best chose it or None): `run_id` as given, or with `best`
    the knee of the study's Pareto front (`analysis.select.best_run`, said with its values);
    the URI is the chosen run's, else `tracking_uri`, else the study folder's store."""
    chosen = None
    if best:
        from srstudy.analysis.select import best_run

        chosen = best_run(workdir=workdir, tracking_uri=tracking_uri, experiment=experiment,
                          objectives=objectives, say=say)
        run_id, tracking_uri = chosen.run_id, chosen.tracking_uri
        say(f"Pareto-best run (knee over {', '.join(chosen.objectives)}): {run_id} "
            + ", ".join(f"{k}={v:.5g}" for k, v in chosen.values.items()))
    return run_id, tracking_uri or StudyDir(workdir).tracking_uri, chosen


def load_source(*, run_id: str | None = None, best: bool = False, checkpoint: str | Path | None = None,
                workdir: str | Path | None = None, tracking_uri: str | None = None, experiment: str | None = None,
                objectives: str | Sequence[str] | None = None, say: Say = log.info) -> ModelSource:
    """The network named by exactly one of `run_id` (a trial's MLflow run), `best` (the
    Pareto-best trial of the study in `workdir` / at `tracking_uri`) or `checkpoint` (a .pth:
    srstudy's, or the official DVMSR BasicSR file)."""
    from srstudy.models.dvmsr import load_checkpoint

    if sum([run_id is not None, bool(best), checkpoint is not None]) != 1:
        raise ExportError("give exactly one of --run-id ID, --best or --checkpoint PATH")
    if checkpoint is not None:
        return ModelSource(load_checkpoint(checkpoint), f"checkpoint {checkpoint}", checkpoint=str(checkpoint))
    run_id, tracking_uri, chosen = pick_run(run_id=run_id, best=best, workdir=workdir, tracking_uri=tracking_uri,
                                            experiment=experiment, objectives=objectives, say=say)
    with tempfile.TemporaryDirectory(prefix="srstudy-export-") as tmp:
        path = student_checkpoint(tracking_uri, run_id, tmp)
        model = load_checkpoint(path)
    return ModelSource(model, f"MLflow run {run_id}", run_id=run_id, tracking_uri=tracking_uri,
                       checkpoint=STUDENT_ARTIFACT, best=chosen.to_dict() if chosen else None)


def onnx_for_run(tracking_uri: str, run_id: str, *, fp16: bool = False, say: Say = log.info) -> bytes:
    """The ONNX graph of a trial run: the one `srstudy export` logged (`onnx_model/model.onnx`,
    or `export/model_fp16.onnx`), else exported now from its student checkpoint."""
    want = f"{EXPORT_ARTIFACT_DIR}/{ONNX_FP16_FILE}" if fp16 else f"{MLFLOW_MODEL_DIR}/model.onnx"
    with tempfile.TemporaryDirectory(prefix="srstudy-onnx-") as tmp:
        local = download_artifact(tracking_uri, run_id, want, tmp)
        if local is not None:
            return local.read_bytes()
        say(f"run {run_id} has no exported graph ({want}); exporting its student now (run `srstudy export "
            f"--run-id {run_id}` to check and keep it)")
        from srstudy.models.dvmsr import load_checkpoint

        model = load_checkpoint(student_checkpoint(tracking_uri, run_id, tmp))
        return export_onnx(model, Path(tmp) / "model.onnx", fp16=fp16).read_bytes()


def bench_graph(*, run_id: str | None = None, best: bool = False, onnx: str | Path | None = None, fp16: bool = False,
                workdir: str | Path | None = None, tracking_uri: str | None = None, experiment: str | None = None,
                objectives: str | Sequence[str] | None = None, say: Say = log.info) -> tuple[bytes, str | None, str]:
    """(graph, run id, tracking URI) for `srstudy bench`: the ONNX file `onnx` (checked;
    `run_id` then only names the run the results go to), else the graph of `run_id` or of
    the study's Pareto-best run (`onnx_for_run`)."""
    run_id, tracking_uri, _ = pick_run(run_id=run_id, best=best, workdir=workdir, tracking_uri=tracking_uri,
                                       experiment=experiment, objectives=objectives, say=say)
    graph = read_onnx(onnx) if onnx is not None else onnx_for_run(tracking_uri, run_id, fp16=fp16, say=say)
    return graph, run_id, tracking_uri
