"""Benchmark: the training pipeline through kfp.local vs the same training called directly in one process.

    python bench/retrain.py                      # 1e5 and 1e6 labelled rows (the closing-note figures)
    python bench/retrain.py --sizes 20000        # a quick run

For each size, a lake of simulated labelled partitions is written under a throwaway EVERGREEN_HOME, then:

- direct:   one fresh Python process calls evergreen.train's prepare, train, evaluate and register (the
            functions the components call), which is what a user would otherwise write as a training script;
- pipeline: one fresh Python process runs the compiled pipeline YAML through kfp.local's SubprocessRunner (each
            component in its own subprocess, artifacts through the pipeline root), as the Kubeflow operator does
            in local mode.

Both write to the same kind of MLflow store (SQLite, created before timing, as it exists in production) and
register a candidate version. Wall time of each process, overhead (pipeline - direct) and ratio are printed.
Goals: ratio < 1.5x at 1e6 rows, overhead < 15 s at 1e5 rows.

The model is the demo config's own (include/config/churn.yaml: a random forest of 100 trees, depth 8, min 5 rows per
leaf) with one setting added for both sides, n_jobs=-1, so the forest uses both cores: 8e5 training rows then fit
in about 35 s on 2 cores instead of 70 s. The pipeline's cost is mostly fixed (a fresh interpreter importing
kfp, pandas, scikit-learn and skops per step, and the artifacts written between steps), so the ratio falls as the
fit grows: a cheaper estimator (e.g. HistGradientBoosting, 5 s at 1e6 rows) shows a larger ratio for the same
absolute overhead -- the overhead in seconds is the figure to compare across estimators.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST = dt.date(2026, 11, 1)
EXTRA_HYPERPARAMETERS = {"n_jobs": -1}  # added to the demo config's forest, see above


def _setup(root: Path, rows: int, days: int) -> dict:
    """Config, lake and an initialised MLflow store under ``root``; returns the run arguments."""
    import yaml

    from evergreen import lake
    from evergreen_demo import simulate
    from evergreen.config import load_config
    from evergreen.train import steps

    doc = yaml.safe_load((REPO / "include" / "config" / "churn.yaml").read_text())
    spec = doc["models"]["churn"]["training"]
    spec["hyperparameters"] = {**spec.get("hyperparameters", {}), **EXTRA_HYPERPARAMETERS}
    config_dir = root / "config"
    config_dir.mkdir(parents=True)
    (config_dir / "churn.yaml").write_text(yaml.safe_dump(doc))
    model = load_config(config_dir).model("churn")
    lake_root = str(root / "lake")
    per_day = rows // days
    for i in range(days):
        day = FIRST + dt.timedelta(days=i)
        frame = simulate.labelled_frame(model, simulate.simulate_day(model, day, per_day))
        lake.write_parquet_atomic(frame, lake.labelled_path("churn", day + dt.timedelta(days=1), lake_root))
    tracking_uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    (root / "mlflow").mkdir()
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).search_experiments()  # create the store's tables before timing
    return {
        "model": "churn",
        "window_start": (FIRST + dt.timedelta(days=1)).isoformat(),
        "window_end": (FIRST + dt.timedelta(days=days + 1)).isoformat(),
        "mlflow_tracking_uri": tracking_uri,
        "mlflow_artifact_location": (root / "mlflow" / "artifacts").as_uri(),
        "lake_root": lake_root,
        "config_dir": str(config_dir),  # the direct run loads it; the pipeline gets the same config as content
        "model_config": steps.model_config_content(model),
        "airflow_dag_id": "bench",
    }


def _direct(args: dict) -> dict:
    """The same four functions the pipeline's components call, in this one process."""
    from evergreen.config import load_config
    from evergreen.train import data, evaluate, register, spec

    steps: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        steps[name] = now - t
        t = now

    model = load_config(args["config_dir"]).model(args["model"])
    window = data.Window.parse(args["window_start"], args["window_end"])
    prepared = data.prepare(model, window, lake_root=args["lake_root"])
    holdout_uri = data.write_holdout(prepared.holdout, Path(os.environ["EVERGREEN_HOME"]) / "direct-holdout.parquet")
    lap("prepare")
    pipeline = spec.train(model, prepared.train)
    lap("train")
    evaluation = evaluate.evaluate(model, pipeline, prepared.holdout)
    lap("evaluate")
    lineage = register.Lineage(
        window=window, fingerprint=prepared.fingerprint, holdout_uri=holdout_uri, training_rows=len(prepared.train),
        hyperparameters=prepared.hyperparameters, airflow_dag_id=args["airflow_dag_id"],
        airflow_run_id=args["airflow_run_id"],
    )
    target = register.MlflowTarget(args["mlflow_tracking_uri"], "", args["mlflow_artifact_location"])
    registered = register.register(model, pipeline, evaluation, lineage, target, prepared.holdout.head(1000))
    lap("register")
    return {"version": registered.version, "metric": evaluation.value, "steps": steps}


def _pipeline(args: dict) -> dict:
    from kfp import components, local

    from evergreen.paths import home
    from evergreen.train.steps import compile_training_pipeline

    compiled = compile_training_pipeline(Path(os.environ["EVERGREEN_HOME"]) / "training.yaml")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(home().kubeflow))
    arguments = {k: v for k, v in args.items() if k != "config_dir"}
    version = components.load_component_from_file(compiled)(**arguments).output
    return {"version": version}


_STEP = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) - INFO - (?:Executing task '([\w-]+)'|Task '([\w-]+)' finished)")


def _step_times(log: str) -> dict[str, float]:
    """Seconds per pipeline step, from kfp.local's 'Executing task' / 'finished' log lines."""
    started, took = {}, {}
    for line in re.sub(r"\x1b\[[0-9;]*m", "", log).splitlines():
        m = _STEP.match(line)
        if m:
            t = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
            if m[4]:
                started[m[4]] = t
            elif m[5] in started:
                took[m[5]] = (t - started[m[5]]) % 86400
    return took


def _child(mode: str, args: dict, home: Path) -> tuple[float, dict]:
    env = {**os.environ, "EVERGREEN_HOME": str(home), "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, f"--_{mode}", json.dumps(args)], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"{mode} run failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.setdefault("steps", _step_times(proc.stdout + proc.stderr))
    if not result.get("version"):
        raise SystemExit(f"{mode} run registered no version: {result}")
    return wall, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="labelled rows")
    parser.add_argument("--days", type=int, default=10, help="lake partitions the rows are spread over")
    parser.add_argument("--repeats", type=int, default=1, help="alternate direct/pipeline runs, keep the fastest")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    parser.add_argument("--_direct", help=argparse.SUPPRESS)
    parser.add_argument("--_pipeline", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts._direct or opts._pipeline:
        # stdout of the child carries only the JSON result line, so libraries must log elsewhere.
        result = _direct(json.loads(opts._direct)) if opts._direct else _pipeline(json.loads(opts._pipeline))
        sys.stdout.flush()
        print(json.dumps(result))
        return

    import yaml

    spec = yaml.safe_load((REPO / "include" / "config" / "churn.yaml").read_text())["models"]["churn"]["training"]
    print(f"model: {spec['estimator']} {json.dumps({**spec['hyperparameters'], **EXTRA_HYPERPARAMETERS})} "
          f"(the demo config's forest, n_jobs=-1 added on both sides so it uses every core)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print(f"{'rows':>9} {'direct_s':>9} {'pipeline_s':>11} {'overhead_s':>11} {'ratio':>7}  goal")
    for rows in opts.sizes:
        root = Path(tempfile.mkdtemp(prefix=f"evergreen-bench-retrain-{rows}-"))
        os.environ["EVERGREEN_HOME"] = str(root)
        args = _setup(root, rows, opts.days)
        direct, pipeline = [], []
        for i in range(opts.repeats):  # alternating, so a load spike on a shared machine hits both sides
            direct.append(_child("direct", {**args, "airflow_run_id": f"bench__direct_{i}"}, root))
            pipeline.append(_child("pipeline", {**args, "airflow_run_id": f"bench__pipeline_{i}"}, root))
        direct_s, best_direct = min(direct, key=lambda r: r[0])
        pipeline_s, best = min(pipeline, key=lambda r: r[0])
        overhead, ratio = pipeline_s - direct_s, pipeline_s / direct_s
        if rows >= 1_000_000:
            goal = f"ratio < 1.5x: {'met' if ratio < 1.5 else 'MISSED'}"
        elif rows >= 100_000:
            goal = f"overhead < 15 s: {'met' if overhead < 15 else 'MISSED'}"
        else:
            goal = "-"
        print(f"{rows:>9} {direct_s:>9.1f} {pipeline_s:>11.1f} {overhead:>11.1f} {ratio:>6.2f}x  {goal}", flush=True)
        for name, result in (("direct", best_direct), ("pipeline", best)):
            steps = ", ".join(f"{k} {v:.1f}" for k, v in result["steps"].items())
            print(f"{'':>9} {name} steps (s): {steps}", flush=True)
        if not opts.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
