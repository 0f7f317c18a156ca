"""Prefect flow that runs the eight DVC stages per cohort, then the report, and groups them in MLflow.

Run it from the project root::

    python -m flows.pipeline                       # every cohort in params.yaml
    python -m flows.pipeline --cohorts physionet2012 mimic_mortality

Each stage is ``dvc repro --single-item <stage>@<cohort>``: DVC decides whether
the stage is out of date and skips it otherwise. The flow opens one MLflow parent run per
execution and passes its id to the stages, whose own runs become its
children. A stage that DVC skips still gets a child run, tagged
``tardiff.cached=true`` and carrying the metrics of its last real run.
With no Prefect server configured, Prefect starts a temporary local one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

# Prefect's temporary server would otherwise try to send usage statistics to an outside host.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import mlflow  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402

from tardiff.config import cohort_names, params_from_dict, read_params_file  # noqa: E402
from tardiff.data.physionet2012 import missing_data_message  # noqa: E402
from tardiff.errors import MissingDataError, TardiffInputError  # noqa: E402
from tasks import tracking  # noqa: E402
from tasks.common import INPUT_ERROR_MARKER, INPUT_ERROR_STATUS, REPORT_STAGE, STAGES, metrics_path  # noqa: E402

# DVC prints the first when nothing changed and the second when it restores outputs from its cache.
SKIPPED_MARKERS = ("didn't change, skipping", "is cached - skipping run")
OUTPUT_TAIL_LINES = 40
STOP_GRACE_SECONDS = 20.0


class StageFailed(RuntimeError):
    """A DVC stage exited with a non-zero status."""

    def __init__(self, stage: str, returncode: int, output: str):
        self.stage = stage
        self.returncode = returncode
        self.output = output
        self.input_error = INPUT_ERROR_MARKER in output
        tail = "\n".join(output.splitlines()[-OUTPUT_TAIL_LINES:])
        super().__init__(f"stage {stage} failed with exit status {returncode}:\n{tail}")


def is_transient(task, task_run, state) -> bool:
    """Retry everything except input errors, which fail the same way every time."""
    try:
        state.result()
    except StageFailed as exc:
        return not exc.input_error
    except Exception:
        return True
    return False


def stage_environment(parent_run_id: str | None) -> dict[str, str]:
    """Return the environment of a stage process: this interpreter first on PATH, the parent run id."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    if parent_run_id:
        env[tracking.PARENT_ENV] = parent_run_id
    return env


def stop_process(process: subprocess.Popen, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
    """Interrupt ``process`` as Ctrl-C would, so DVC can release its lock; kill it if it outlives the grace period."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@task(name="dvc-stage", retries=2, retry_delay_seconds=10, retry_condition_fn=is_transient)
def run_dvc_stage(stage: str, project: str, parent_run_id: str | None, force: bool = False,
                  cohort: str | None = None) -> dict:
    """Run one DVC stage (``stage@cohort`` for the per-cohort stages); returns whether DVC skipped it and its metrics."""
    logger = get_run_logger()
    target = f"{stage}@{cohort}" if cohort else stage
    command = [sys.executable, "-m", "dvc", "repro", "--single-item", target]
    if force:
        command.append("--force")
    logger.info("running %s", " ".join(command[1:]))
    process = subprocess.Popen(
        command, cwd=project, env=stage_environment(parent_run_id),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines = []
    assert process.stdout is not None
    try:
        for line in process.stdout:
            lines.append(line)
            logger.info("%s | %s", target, line.rstrip())
        returncode = process.wait()
    except BaseException:
        # On Ctrl-C or a cancelled run, stop DVC too instead of waiting for the stage to end.
        stop_process(process)
        raise
    output = "".join(lines)
    if returncode != 0:
        raise StageFailed(target, returncode, output)

    metrics_file = Path(project) / metrics_path(stage, cohort) if cohort else None
    metrics = json.loads(metrics_file.read_text()) if metrics_file and metrics_file.is_file() else {}
    skipped = any(marker in output for marker in SKIPPED_MARKERS)
    return {"stage": stage, "cohort": cohort, "skipped": skipped, "metrics": metrics}


def log_cached_stage(stage: str, metrics: dict, params, dataset: str | None = None) -> None:
    """Record a stage that DVC skipped as a child run holding its last metrics."""
    dataset = dataset or params.cohort
    tags = tracking.run_tags(stage, params, {"tardiff.cached": "true", "dataset": dataset})
    with mlflow.start_run(run_name=f"{stage} {dataset} (cached)", tags=tags, nested=True):
        tracking.log_metrics({k: v for k, v in metrics.items()})


def _check_data_dir(root: Path, params) -> None:
    data_dir = root / params.data.dir
    if data_dir.exists():
        return
    # DVC would stop on the missing dependency with a bare "No such file", so name what to download.
    if params.data.dataset == "physionet2012":
        raise MissingDataError(missing_data_message(data_dir, None))
    raise MissingDataError(
        f"data folder {data_dir} of cohort {params.cohort} (reader {params.data.dataset}) not found; "
        f"docs/data.md says where to get it. Set cohorts.{params.cohort}.data.dir in params.yaml to its location, "
        "or leave the cohort out with --cohorts"
    )


@flow(name="tardiff-pipeline", log_prints=True)
def tardiff_pipeline(project: str = ".", cohorts: list[str] | None = None, stages: list[str] | None = None,
                     force: bool = False) -> dict:
    """Run the TarDiff stages through DVC for each cohort, then the report, with one MLflow parent run.

    Args:
        project: the project root holding ``dvc.yaml`` and ``params.yaml``.
        cohorts: names under ``cohorts`` in params.yaml, run in this order; default all.
        stages: a subset of the eight per-cohort stages and ``report``; default all.
        force: re-run the stages even when DVC finds them up to date.

    Returns:
        ``{"parent_run_id": ..., "stages": [per-stage results, each naming its cohort]}``.
    """
    selected = list(stages) if stages else [*STAGES, REPORT_STAGE]
    unknown = [name for name in selected if name not in (*STAGES, REPORT_STAGE)]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; the stages are {[*STAGES, REPORT_STAGE]}")
    root = Path(project).resolve()
    params_file = root / "params.yaml"
    raw = read_params_file(params_file)
    defined = cohort_names(raw, str(params_file))
    chosen = list(dict.fromkeys(cohorts)) if cohorts else defined
    missing = [name for name in chosen if name not in defined]
    if missing:
        raise TardiffInputError(f"cohort(s) {missing} are not defined under 'cohorts' in {params_file}; "
                                f"defined: {defined}")
    per_cohort = {name: params_from_dict(raw, str(params_file), cohort=name) for name in chosen}
    if "preprocess" in selected:
        for params in per_cohort.values():
            _check_data_dir(root, params)
    logger = get_run_logger()

    uri = tracking.configure(root)
    logger.info("MLflow tracking URI: %s", uri)
    first = next(iter(per_cohort.values()))
    results = []
    tags = {**tracking.run_tags("pipeline", first), "dataset": ",".join(chosen)}
    with mlflow.start_run(run_name=f"pipeline ({', '.join(chosen)}; {first.profile})", tags=tags) as parent:
        parent_id = parent.info.run_id
        for cohort, params in per_cohort.items():
            for stage in (name for name in STAGES if name in selected):
                result = run_dvc_stage(stage, str(root), parent_id, force, cohort)
                if result["skipped"]:
                    logger.info("stage %s@%s is up to date; DVC skipped it", stage, cohort)
                    log_cached_stage(stage, result["metrics"], params)
                results.append(result)
            evaluation = next((r["metrics"] for r in results
                               if r["stage"] == "evaluate" and r["cohort"] == cohort), None)
            if evaluation:
                tracking.log_metrics(evaluation, prefix=cohort)
        if REPORT_STAGE in selected:
            result = run_dvc_stage(REPORT_STAGE, str(root), parent_id, force)
            if result["skipped"]:
                log_cached_stage(REPORT_STAGE, {}, first, dataset="all")
            results.append(result)
            report = root / "reports" / "results.md"
            if report.is_file():
                mlflow.log_artifact(str(report))
        mlflow.log_artifact(str(params_file))
    return {"parent_run_id": parent_id, "stages": results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the TarDiff pipeline (DVC stages per cohort) as a Prefect flow.")
    parser.add_argument("--project", default=".", help="project root with dvc.yaml (default: current folder)")
    parser.add_argument("--cohorts", nargs="+", metavar="NAME",
                        help="cohorts under `cohorts` in params.yaml, in order (default: all)")
    parser.add_argument("--stages", nargs="+", choices=[*STAGES, REPORT_STAGE],
                        help="run only these stages (default: all eight per cohort, then the report)")
    parser.add_argument("--force", action="store_true", help="re-run stages even when DVC finds them up to date")
    args = parser.parse_args(argv)
    try:
        tardiff_pipeline(project=args.project, cohorts=args.cohorts, stages=args.stages, force=args.force)
    except TardiffInputError as exc:
        print(f"{INPUT_ERROR_MARKER} {exc}", file=sys.stderr)
        sys.exit(INPUT_ERROR_STATUS)
    except StageFailed as exc:
        print(f"tardiff pipeline stopped: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
