"""The serving app under a real uvicorn with concurrent clients: micro-batching, an alias swap under load with no
failed or mixed request, SIGTERM draining the real prediction log into the SQLite store (``python -m
evergreen.serve``), and a real Prometheus (Debian's package) scraping ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse

import httpx
import pytest

from evergreen.serve.app import create_app
from serving_support import (
    RecordingLog,
    churn,
    expected_scores,
    free_port,
    live_server,
    metric_samples,
    metric_value,
    rows,
    source,
)


async def _post_all(base: str, bodies: list[dict], concurrency: int, path: str = "/predict") -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(body: dict) -> httpx.Response:
            async with gate:
                return await client.post(path, json=body)

        return await asyncio.gather(*(one(b) for b in bodies))


class SlowSource:
    """The registry's versions, each model call taking 150 ms longer (sleeping, so the GIL is free): requests keep
    arriving while a batch is scored, whatever the speed of the machine or of the in-process client (httpx, which
    spends milliseconds of CPU per request)."""

    def __init__(self):
        self.real = source()

    def aliases(self):
        return self.real.aliases()

    def load(self, version):
        real = self.real.load(version)

        class Slow:
            classes_ = real.classes_

            def predict_proba(self, X):
                time.sleep(0.15)
                return real.predict_proba(X)

        return Slow()


def test_concurrent_single_row_requests_are_micro_batched(registry):
    registry.set_aliases(registry.v1, None)
    app = create_app(churn(serving={"max_batch_rows": 32, "max_wait_ms": 2.0}), prediction_log=RecordingLog(),
                     source=SlowSource())
    recs = rows(320, seed="batching")
    with live_server(app) as base:
        responses = asyncio.run(_post_all(base, [{"instances": [r]} for r in recs], concurrency=64))
        text = httpx.get(f"{base}/metrics").text
    assert [r.status_code for r in responses] == [200] * len(recs)
    scores = [r.json()["predictions"][0]["score"] for r in responses]
    assert scores == expected_scores(registry.pipelines[registry.v1], recs)
    calls = metric_value(text, "evergreen_batch_rows_count")
    assert metric_value(text, "evergreen_batch_rows_sum") == len(recs)
    assert calls <= len(recs) / 4, f"{calls} model calls for {len(recs)} single-row requests: not batched"
    bound = min(float(labels["le"]) for labels, v in metric_samples(text, "evergreen_batch_rows_bucket")
                if v == calls)  # the smallest bucket holding every model call
    assert bound <= 32  # no batch beyond max_batch_rows
    print(f"\n{len(recs)} single-row requests at 64 concurrent: {len(recs) / calls:.1f} rows per model call")


def test_alias_swap_under_load_has_no_failed_or_mixed_request(registry):
    """Clients post 3-row requests nonstop while champion moves v1 -> v2: every request is answered 200, wholly by
    one version, with that version's own scores, and the app swaps without a restart."""
    reg = registry
    reg.set_aliases(reg.v1, None)
    app = create_app(churn(serving={"poll_interval_s": 0.05}), prediction_log=RecordingLog(), source=source())
    pool = rows(300, seed="swap")
    expected = {v: expected_scores(reg.pipelines[v], pool) for v in (reg.v1, reg.v2)}
    results: list[tuple[int, list[int], dict]] = []

    async def load(base: str) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            stop = asyncio.Event()

            async def worker(w: int) -> None:
                k = w
                while not stop.is_set():
                    idx = [(k + j) % len(pool) for j in range(3)]
                    k += 7
                    r = await client.post("/predict", json={"instances": [pool[i] for i in idx]})
                    results.append((r.status_code, idx, r.json()))

            workers = [asyncio.create_task(worker(w)) for w in range(16)]
            await asyncio.sleep(1.0)
            await asyncio.to_thread(reg.set_aliases, reg.v2, None)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                if any(doc.get("predictions", [{}])[0].get("model_version") == reg.v2 for _, _, doc in results[-20:]):
                    break
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*workers)

    with live_server(app) as base:
        asyncio.run(load(base))
        text = httpx.get(f"{base}/metrics").text
    assert results and all(status == 200 for status, _, _ in results), [d for s, _, d in results if s != 200][:3]
    seen = []
    for _, idx, doc in results:
        versions = {p["model_version"] for p in doc["predictions"]}
        assert len(versions) == 1, f"a request answered by several versions: {doc}"
        (version,) = versions
        assert [p["score"] for p in doc["predictions"]] == [expected[version][i] for i in idx]
        seen.append(version)
    assert set(seen) == {reg.v1, reg.v2}
    first_v2 = seen.index(reg.v2)
    assert seen[first_v2:].count(reg.v1) <= 16  # only requests already in flight at the swap finish on v1
    assert metric_value(text, "evergreen_model_swaps_total") == 1
    assert metric_value(text, "evergreen_model_info", arm="champion", version=reg.v2) == 1
    assert metric_value(text, "evergreen_request_errors_total") == 0
    print(f"\n{len(results)} requests across the swap, {seen.count(reg.v1)} on v1, {seen.count(reg.v2)} on v2")


def _wait_ready(base: str, proc: subprocess.Popen, output, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}: {output()}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the server did not become ready: {output()}")


def test_sigterm_drains_every_prediction_into_the_store(registry, tmp_path):
    """``python -m evergreen.serve`` with the real prediction log and the SQLite store: requests are still in
    flight when SIGTERM arrives; every answered prediction is in the store after the process exits."""
    from evergreen.store import open_store

    registry.set_aliases(registry.v1, registry.v2)  # split: both arms' predictions are logged
    store_uri = f"sqlite:///{tmp_path / 'store.db'}"
    port = free_port()
    env = {**os.environ,
           "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "extra": {"uri": registry.uri}}),
           "AIRFLOW_CONN_EVERGREEN_STORE": json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "store.db")}),
           "EVERGREEN_SPOOL_DIR": str(tmp_path / "spool"), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    output = (tmp_path / "server.log").open("wb")  # a file, not a pipe nobody reads while the server runs
    proc = subprocess.Popen([sys.executable, "-m", "evergreen.serve", "--model", "churn", "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    server_log = lambda: (tmp_path / "server.log").read_text(errors="replace")[-3000:]  # noqa: E731
    try:
        _wait_ready(base, proc, server_log)
        recs = rows(400, seed="sigterm")
        for i, r in enumerate(recs):
            r["request_id"] = f"t{i}"

        async def load() -> list[httpx.Response | Exception]:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                gate = asyncio.Semaphore(32)
                done = 0

                async def one(rec: dict) -> httpx.Response | Exception:
                    nonlocal done
                    async with gate:
                        try:
                            return await client.post("/predict", json={"instances": [rec]})
                        except httpx.TransportError as exc:  # refused once the server stopped accepting
                            return exc
                        finally:
                            done += 1
                            if done == 200:
                                proc.send_signal(signal.SIGTERM)

                return await asyncio.gather(*(one(r) for r in recs))

        answers = asyncio.run(load())
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status says SIGTERM
        assert proc.wait(120) in (0, -signal.SIGTERM), server_log()
        assert "Traceback" not in (tmp_path / "server.log").read_text(errors="replace"), server_log()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    answered = {r.json()["predictions"][0]["request_id"]: r.json()["predictions"][0] for r in answers
                if isinstance(r, httpx.Response) and r.status_code == 200}
    assert len(answered) >= 200
    with open_store(store_uri) as store:
        stored = store.read_predictions("churn")
    assert set(answered) <= set(stored["request_id"]), "answered predictions missing from the store"
    assert set(stored["request_id"]) <= {r["request_id"] for r in recs}
    by_id = stored.set_index("request_id")
    for rid, p in answered.items():
        assert by_id.loc[rid, "model_version"] == p["model_version"] and by_id.loc[rid, "arm"] == p["arm"]
        assert by_id.loc[rid, "score"] == pytest.approx(p["score"])
    assert not list((tmp_path / "spool").glob("*.seg")), "the spool was not drained"
    print(f"\n{len(answered)} answered before/while SIGTERM; all in the store")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None,
                    reason="Debian's prometheus is not installed (apt-get install prometheus; make test does as root)")
def test_a_real_prometheus_scrapes_the_counters(registry, tmp_path):
    registry.set_aliases(registry.v1, registry.v2)
    app = create_app(churn(), prediction_log=RecordingLog(), source=source())
    with live_server(app) as base:
        target = urllib.parse.urlsplit(base).netloc
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: evergreen\n    static_configs: [{{targets: ['{target}']}}]\n")
        prom_port = free_port()
        prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            recs = rows(50, seed="prometheus")
            responses = asyncio.run(_post_all(base, [{"instances": [r]} for r in recs], concurrency=8))
            assert all(r.status_code == 200 for r in responses)
            arms = [r.json()["predictions"][0]["arm"] for r in responses]
            bad = httpx.post(f"{base}/predict", json={"instances": [{"x": 1}]})
            assert bad.status_code == 400

            def query(expr: str) -> dict[str, float]:
                r = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/query", params={"query": expr}, timeout=5)
                result = r.json()["data"]["result"]
                return {s["metric"].get("arm", s["metric"].get("reason", "")): float(s["value"][1]) for s in result}

            want = {"champion": arms.count("champion"), "challenger": arms.count("challenger")}
            deadline = time.monotonic() + 60
            got: dict[str, float] = {}
            while time.monotonic() < deadline:
                try:
                    got = query('sum by (arm) (evergreen_predictions_total{job="evergreen"})')
                    if got == want:
                        break
                except (httpx.TransportError, KeyError, ValueError):
                    if prom.poll() is not None:
                        raise AssertionError(f"prometheus exited: {prom.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.5)
            assert got == want
            assert query('sum by (reason) (evergreen_request_errors_total{job="evergreen"})') == {"bad_request": 1}
            assert query('sum(evergreen_request_duration_seconds_count{job="evergreen",endpoint="predict"})') \
                == {"": 51}
            up = query('up{job="evergreen"}')
            assert up == {"": 1}
        finally:
            prom.terminate()
            prom.wait(30)
