"""Serving throughput: Evergreen's scoring app against ``mlflow models serve`` on the same registered model.

One run, one machine, the same model: the demo config's 100-tree random forest (``include/config/churn.yaml``)
trained by the platform's own steps on simulated churn traffic and registered in an embedded MLflow, then served by

* **ours**: ``python -m evergreen.serve --model churn`` (micro-batching, every prediction spooled and shipped to the
  embedded SQLite store);
* **the peer**: ``mlflow models serve -m models:/churn/<v> --env-manager local`` (MLflow's scoring server, the one a
  user would start instead; it logs nothing, and loads the skops model only with
  ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true``, set for its process alone).

Load: Debian's ``wrk`` (``apt-get install wrk``), single-row POSTs over keep-alive connections, at 8 and 64
connections for ``--seconds`` each (wrk's 2 s request timeout: a slower answer counts as a timeout). Reported per
server and connection count: requests/s, p50 and p99 latency, timeouts and non-2xx answers. Afterwards our server
gets SIGTERM (it drains its prediction log) and every 2xx answer of our runs is counted in the store. Before the
runs, the time of one model call on the registered version (the pipeline's own ``predict_proba`` against the app's
:func:`evergreen.serve.models.score_rows`) and the machine's load average; after them, the load again (the machine is
shared: read the figures next to it).

    .venv/bin/python bench/serving.py [--seconds 20] [--connections 8 64]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "plugins"))
sys.path.insert(0, str(REPO / "tools"))

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%s]]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def post(url: str, body: dict) -> dict:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(url: str, body: str, connections: int, seconds: int, workdir: Path) -> dict:
    script = workdir / "post.lua"
    script.write_text(LUA % body)
    threads = min(2, connections)
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise SystemExit(f"wrk failed: {out.stderr or out.stdout}")
    text = out.stdout
    total = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
    timeouts = int(m.group(1)) if (m := re.search(r"timeout (\d+)", text)) else 0
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write) (\d+)", text)) if "Socket errors" in text else 0
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        # the distribution's own lines: a "+/- Stdev" column such as "77.50%" also ends in "50%"
        "p50_ms": _ms(re.search(r"^\s*50%\s+(\S+)", text, re.M).group(1)),
        "p99_ms": _ms(re.search(r"^\s*99%\s+(\S+)", text, re.M).group(1)),
        "completed": total, "ok": total - non2xx, "non2xx": non2xx, "timeouts": timeouts, "socket_errors": errors,
    }


def build_model(home: Path) -> tuple[str, str]:
    """The demo config's forest, trained and registered by the platform's steps; champion alias set."""
    from evergreen import lake, tracking
    from evergreen.config import get_config
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.promote.registry import move_alias
    from evergreen.train.data import Window
    from evergreen.train.register import MlflowTarget
    from evergreen.train.steps import run_training
    from evergreen_demo import simulate

    model = get_config().model("churn")
    for i in range(6):
        day = dt.date(2026, 11, 1) + dt.timedelta(days=i)
        frame = simulate.labelled_frame(model, simulate.simulate_day(model, day, 2000))
        lake.write_parquet_atomic(frame, lake.labelled_path("churn", day + dt.timedelta(days=1)))
    hook = MlflowHook()
    target = MlflowTarget(hook.tracking_uri, hook.registry_uri, hook.artifact_location or "")
    result = run_training(model, Window.parse("2026-11-02", "2026-11-08"), target,
                          holdout_path=home / "holdout.parquet", airflow_dag_id="bench", airflow_run_id="serving")
    version = result.registered.version
    client = hook.get_conn()
    move_alias(client, "churn", tracking.CHAMPION, version, None)
    return version, hook.tracking_uri


def model_call_ms(model, version: str, features: dict, sizes=(1, 8, 64), repeat: int = 200) -> list[str]:
    """The time of one model call on the registered version: ``pipeline.predict_proba`` on a frame of the rows
    against the app's :func:`evergreen.serve.models.score_rows` (validation, the compiled predictor, the logged
    features), per batch size; the median of ``repeat`` calls."""
    import pandas as pd

    from evergreen.serve.models import LoadedModel, MlflowModelSource, score_rows

    loaded = LoadedModel(model, version, MlflowModelSource(model.name).load(version))
    row = [features[f] for f in model.feature_names]

    def median_ms(fn) -> float:
        fn()
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return sorted(times)[len(times) // 2] * 1e3

    out = []
    for n in sizes:
        frame = pd.DataFrame([row] * n, columns=model.feature_names)
        ref = median_ms(lambda: loaded.pipeline.predict_proba(frame))
        ours = median_ms(lambda: score_rows(loaded, [[row]] * n))
        out.append(f"{n} rows: pipeline.predict_proba {ref:.2f} ms, score_rows {ours:.2f} ms")
    kind = "compiled" if loaded.predictor.compiled else "not compiled: pipeline.predict_proba"
    return [f"model call ({kind}; median of {repeat}): " + "; ".join(out)]


def one_row(model) -> dict:
    from evergreen_demo import simulate

    day = simulate.simulate_day(model, dt.date(2026, 11, 20), 1)
    row = day.predictions.iloc[0]
    return {f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in model.feature_names}


def stop(proc: subprocess.Popen, timeout: float = 120) -> float:
    started = time.monotonic()
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 64])
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/serving.py needs Debian's wrk load generator: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="evergreen-bench-serving-"))
    home = work / "home"
    env = {**os.environ, "EVERGREEN_HOME": str(home), "EVERGREEN_EMBEDDED": "1",
           "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for key in ("EVERGREEN_LAKE_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT", "AIRFLOW_CONN_EVERGREEN_STORE"):
        env.pop(key, None)
    os.environ.clear()
    os.environ.update(env)
    from evergreen.airflow_env import airflow_env

    os.environ.update(airflow_env())
    env = dict(os.environ)

    from evergreen.config import get_config
    from evergreen.hooks.store import StoreHook

    model = get_config().model("churn")
    started = time.monotonic()
    version, tracking_uri = build_model(home)
    print(f"model: churn version {version}, {model.training.estimator} {model.training.hyperparameters} "
          f"(trained and registered in {time.monotonic() - started:.0f} s)")
    features = one_row(model)
    for line in model_call_ms(model, version, features):
        print(line)
    ours_body = json.dumps({"instances": [{model.entity_id: "c-bench", **features}]})
    mlflow_body = json.dumps({"dataframe_records": [features]})

    results: dict[str, dict[int, dict]] = {}
    procs = []
    try:
        port = free_port()
        log = (work / "ours.log").open("w")
        ours = subprocess.Popen([sys.executable, "-m", "evergreen.serve", "--model", "churn", "--port", str(port),
                                 "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(ours)
        wait_ready(f"http://127.0.0.1:{port}/ready", ours, work / "ours.log")
        answer = post(f"http://127.0.0.1:{port}/predict", json.loads(ours_body))
        print(f"ours answers: {json.dumps(answer)[:200]}")
        store = StoreHook().get_conn()
        before = len(store.read_predictions("churn"))

        mport = free_port()
        mlog = (work / "mlflow.log").open("w")
        peer = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", f"models:/churn/{version}", "-p",
                                 str(mport), "-h", "127.0.0.1", "--env-manager", "local"],
                                env={**env, "MLFLOW_TRACKING_URI": tracking_uri,
                                     # MLflow's own loader refuses skops models without it (the platform's loader
                                     # passes its trusted types instead); the model was trained just above
                                     "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}, stdout=mlog,
                                stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(peer)
        wait_ready(f"http://127.0.0.1:{mport}/ping", peer, work / "mlflow.log")
        print(f"mlflow models serve answers: {json.dumps(post(f'http://127.0.0.1:{mport}/invocations', json.loads(mlflow_body)))[:200]}")

        print(f"load average before the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
        for connections in args.connections:
            for name, url, body in (("ours", f"http://127.0.0.1:{port}/predict", ours_body),
                                    ("mlflow", f"http://127.0.0.1:{mport}/invocations", mlflow_body)):
                r = wrk(url, body, connections, args.seconds, work)
                results.setdefault(name, {})[connections] = r
                print(f"  {name:6s} c={connections:<3d} {r['rps']:9.1f} req/s  p50 {r['p50_ms']:8.1f} ms  "
                      f"p99 {r['p99_ms']:8.1f} ms  ok {r['ok']}  non-2xx {r['non2xx']}  timeouts {r['timeouts']}",
                      flush=True)
        print(f"load average after the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        stop(peer)
        drain = stop(ours)
        stored = len(store.read_predictions("churn")) - before
        ok = sum(r["ok"] for r in results["ours"].values())
    finally:
        for proc in procs:
            stop(proc, timeout=30)

    print("\n| connections | ours req/s | mlflow req/s | ratio | ours p50 / p99 ms | mlflow p50 / p99 ms | "
          "mlflow timeouts |")
    print("|---|---|---|---|---|---|---|")
    for c in args.connections:
        o, m = results["ours"][c], results["mlflow"][c]
        print(f"| {c} | {o['rps']:.0f} | {m['rps']:.0f} | {o['rps'] / max(m['rps'], 1e-9):.1f}x | "
              f"{o['p50_ms']:.1f} / {o['p99_ms']:.1f} | {m['p50_ms']:.1f} / {m['p99_ms']:.1f} | {m['timeouts']} |")
    # wrk stops mid-flight: requests it cut off were still answered and logged, so the store may hold a few more
    lost = max(0, ok - stored)
    print(f"\nprediction log: {ok} 2xx answers counted by wrk, {stored} predictions in the store after SIGTERM "
          f"(drained in {drain:.1f} s; {stored - ok} more were answered after wrk stopped counting): "
          f"{'nothing lost' if not lost else f'{lost} MISSING'}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not lost else 1


if __name__ == "__main__":
    raise SystemExit(main())
