"""The serving app on a real MLflow registry (two versions trained by the platform's steps): every endpoint's shape,
routing and shadow mode, each 4xx, a model error's 5xx, the log-full policy, readiness, and the drift gauges.

In-process through Starlette's TestClient (the app's own lifespan and event loop); the tests that need real
concurrency are in test_live.py."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from fastapi.testclient import TestClient

from evergreen.serve import routing
from evergreen.serve.app import create_app
from serving_support import RecordingLog, churn, expected_scores, metric_samples, metric_value, rows, source


def app_for(model=None, *, log=None, src=None, store_factory=None):
    """The app with a recording log; drift records from ``store_factory`` (default: the session's embedded store)."""
    log = log if log is not None else RecordingLog()
    return create_app(model or churn(), prediction_log=log, source=src or source(), store_factory=store_factory), log


@pytest.fixture
def champion_only(registry):
    registry.set_aliases(registry.v1, None)
    return registry


@pytest.fixture
def client(champion_only):
    app, log = app_for()
    with TestClient(app) as c:
        c.log = log
        yield c


def refresh(client) -> None:
    client.portal.call(client.app.state.server.refresh)


# --- shapes ------------------------------------------------------------------------------------------------------


def test_predict_records_answer_the_champions_scores_and_log_every_row(client, champion_only):
    recs = rows(5)
    recs[0]["request_id"], recs[1]["request_id"] = "r-0", "r-1"
    for i in range(2, 5):
        recs[i]["request_id"] = f"r-{i}"
    r = client.post("/predict", json={"instances": recs})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model"] == "churn" and doc["mode"] == "champion_only" and doc["logged"] is True
    assert r.headers["X-Evergreen-Logged"] == "true"
    preds = doc["predictions"]
    assert [p["request_id"] for p in preds] == [f"r-{i}" for i in range(5)]
    assert [p["entity_id"] for p in preds] == [f"c{i}" for i in range(5)]
    assert {(p["model_version"], p["arm"]) for p in preds} == {(champion_only.v1, "champion")}
    v1 = champion_only.pipelines[champion_only.v1]
    assert [p["score"] for p in preds] == expected_scores(v1, recs)
    assert all(p["prediction"] == int(p["score"] >= 0.5) for p in preds)
    logged = client.log.records
    assert [rec["request_id"] for rec in logged] == [f"r-{i}" for i in range(5)]
    first = logged[0]
    assert set(first) == {"model", "request_id", "entity_id", "ts", "model_version", "arm", "prediction", "score",
                          "features"}
    assert first["ts"].tzinfo is not None and first["model"] == "churn" and first["arm"] == "champion"
    assert first["features"] == {k: v for k, v in recs[0].items() if k not in ("customer_id", "request_id")}
    assert isinstance(first["features"]["tenure_months"], int)


def test_predict_feature_rows_route_by_request_id_and_keep_given_ids(client, champion_only):
    model = churn()
    recs = rows(3)
    values = [[r[f] for f in model.feature_names] for r in recs]
    r = client.post("/predict", json={"features": values[:1], "request_id": "one"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["request_id"] == "one"
    assert r.json()["predictions"][0]["entity_id"] is None
    r = client.post("/predict", json={"features": values, "request_id": "many"})
    assert [p["request_id"] for p in r.json()["predictions"]] == ["many-0", "many-1", "many-2"]
    r = client.post("/predict", json={"features": values, "entity_ids": ["a", "b", "c"], "request_ids": [1, 2, 3]})
    assert [(p["request_id"], p["entity_id"]) for p in r.json()["predictions"]] == [("1", "a"), ("2", "b"), ("3", "c")]
    r = client.post("/predict", json={"features": values})
    ids = [p["request_id"] for p in r.json()["predictions"]]
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)  # uuid4 hex per row
    assert [p["score"] for p in r.json()["predictions"]] == expected_scores(
        champion_only.pipelines[champion_only.v1], recs)


def test_batch_predict_scores_a_large_request_in_one_model_call(client, champion_only):
    recs = rows(600, seed="batch")
    r = client.post("/batch_predict", json={"instances": recs})
    assert r.status_code == 200, r.text
    assert [p["score"] for p in r.json()["predictions"]] == expected_scores(
        champion_only.pipelines[champion_only.v1], recs)
    text = client.get("/metrics").text
    assert metric_value(text, "evergreen_batch_rows_sum", arm="champion") >= 600
    assert len(client.log.records) == 600


def test_tensorflow_serving_predict_status_and_errors(client, champion_only):
    reg = champion_only
    reg.set_aliases(reg.v1, reg.v2)
    refresh(client)
    model = churn()
    recs = rows(4)
    r = client.post("/v1/models/churn:predict", json={"instances": recs})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert set(preds[0]) == {"score", "prediction", "model_version", "arm", "request_id"}
    # pinned by version and by label: no routing, that version answers every row
    r = client.post(f"/v1/models/churn/versions/{reg.v2}:predict", json={"instances": recs, "signature_name": "x"})
    assert [p["score"] for p in r.json()["predictions"]] == expected_scores(reg.pipelines[reg.v2], recs)
    assert {(p["model_version"], p["arm"]) for p in r.json()["predictions"]} == {(reg.v2, "challenger")}
    r = client.post("/v1/models/churn/labels/champion:predict",
                    json={"instances": [[x[f] for f in model.feature_names] for x in recs]})
    assert [p["score"] for p in r.json()["predictions"]] == expected_scores(reg.pipelines[reg.v1], recs)
    columns = {name: [x[name] for x in recs] for name in ["customer_id", *model.feature_names]}
    r = client.post("/v1/models/churn/labels/challenger:predict", json={"inputs": columns})
    out = r.json()["outputs"]
    assert set(out) == {"score", "prediction", "model_version", "arm", "request_id"}
    assert out["score"] == expected_scores(reg.pipelines[reg.v2], recs)
    assert out["model_version"] == [reg.v2] * 4
    status = client.get("/v1/models/churn").json()
    assert status == {"model_version_status": [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in (reg.v1, reg.v2)]}
    assert [s["version"] for s in client.get(f"/v1/models/churn/versions/{reg.v2}").json()["model_version_status"]] \
        == [reg.v2]
    for path, status_code, fragment in [
        ("/v1/models/churn/versions/99:predict", 404, "version '99' of model 'churn' is not served"),
        ("/v1/models/churn/labels/canary:predict", 404, "label 'canary'"),
        ("/v1/models/other:predict", 404, "model 'other' is not served here"),
        ("/v1/models/churn:classify", 400, "':classify' is not served"),
    ]:
        r = client.post(path, json={"instances": recs})
        assert r.status_code == status_code and set(r.json()) == {"error"} and fragment in r.json()["error"], r.text
    r = client.post("/v1/models/churn:predict", json={"instances": [{**recs[0], "plan": "gold"}]})
    assert r.status_code == 422 and set(r.json()) == {"error"} and "'gold'" in r.json()["error"]
    assert client.get("/v1/models/churn/versions/99").status_code == 404


def test_open_inference_protocol(client, champion_only):
    reg = champion_only
    model = churn()
    recs = rows(3)
    kinds = {"float": "FP64", "int": "INT64", "bool": "BOOL", "category": "BYTES"}
    inputs = [{"name": f.name, "shape": [3], "datatype": kinds[f.type], "data": [x[f.name] for x in recs]}
              for f in model.features]
    inputs.append({"name": "customer_id", "shape": [3, 1], "datatype": "BYTES",
                   "data": [[x["customer_id"]] for x in recs]})
    r = client.post("/v2/models/churn/infer", json={"id": "req-7", "inputs": inputs})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_name"] == "churn" and doc["model_version"] == reg.v1 and doc["id"] == "req-7"
    out = {o["name"]: o for o in doc["outputs"]}
    assert set(out) == {"score", "prediction", "model_version", "arm", "request_id"}
    assert out["score"]["shape"] == [3] and out["score"]["datatype"] == "FP64"
    assert out["score"]["data"] == expected_scores(reg.pipelines[reg.v1], recs)
    assert out["request_id"]["data"] == ["req-7-0", "req-7-1", "req-7-2"]
    r = client.post(f"/v2/models/churn/versions/{reg.v1}/infer", json={"inputs": inputs})
    assert r.status_code == 200
    assert client.post("/v2/models/churn/versions/99/infer", json={"inputs": inputs}).status_code == 404
    bad = [dict(inputs[0], shape=[2]), *inputs[1:]]
    r = client.post("/v2/models/churn/infer", json={"inputs": bad})
    assert r.status_code == 400 and "the shape says 2 rows" in r.json()["error"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/churn/ready").json() == {"name": "churn", "ready": True}
    meta = client.get("/v2/models/churn").json()
    assert meta["versions"] == [reg.v1]
    assert [i["name"] for i in meta["inputs"]] == [*model.feature_names, "customer_id"]
    assert client.get("/v2").json()["name"] == "evergreen"


def test_health_and_readiness_follow_the_champion(registry):
    registry.set_aliases(None, None)
    app, _ = app_for()
    with TestClient(app) as client:
        assert client.get("/health").json() == {"status": "alive"}
        r = client.get("/ready")
        assert r.status_code == 503 and "no version with alias 'champion'" in r.json()["reason"]
        assert client.get("/v2/health/ready").status_code == 503
        r = client.post("/predict", json={"instances": rows(1)})
        assert r.status_code == 503 and "not ready" in r.json()["error"]
        registry.set_aliases(registry.v1, None)
        refresh(client)
        r = client.get("/ready")
        assert r.status_code == 200 and r.json()["arms"] == {"champion": registry.v1}
        assert client.post("/predict", json={"instances": rows(1)}).status_code == 200


# --- routing and shadow -------------------------------------------------------------------------------------------


def test_split_routes_each_entity_by_its_hash_with_the_challengers_share(champion_only):
    reg = champion_only
    reg.set_aliases(reg.v1, reg.v2)
    app, log = app_for(churn(ab_test={"mode": "split", "challenger_share": 0.3}))
    with TestClient(app) as client:
        recs = rows(1000, seed="split")
        r = client.post("/predict", json={"instances": recs})
        assert r.status_code == 200, r.text
        doc = r.json()
        experiment = routing.experiment_id("churn", reg.v2)
        assert doc["experiment"] == experiment and doc["routed_by"] == "entity_id" and doc["mode"] == "split"
        arms = [p["arm"] for p in doc["predictions"]]
        assert arms == [routing.assign(x["customer_id"], experiment, 0.3) for x in recs]
        share = arms.count("challenger") / len(arms)
        assert 0.25 < share < 0.35
        expected = {v: expected_scores(reg.pipelines[v], recs) for v in (reg.v1, reg.v2)}
        for i, p in enumerate(doc["predictions"]):
            assert p["model_version"] == (reg.v2 if p["arm"] == "challenger" else reg.v1)
            assert p["score"] == expected[p["model_version"]][i]
        # the same entity gets the same arm on every request, in any company
        again = client.post("/predict", json={"instances": recs[::-7]}).json()["predictions"]
        assert [p["arm"] for p in again] == arms[::-7]
        assert {(x["entity_id"], x["arm"]) for x in log.records} == \
            {(p["entity_id"], p["arm"]) for p in doc["predictions"]}
        text = client.get("/metrics").text
        assert metric_value(text, "evergreen_predictions_total", arm="challenger", version=reg.v2) == \
            arms.count("challenger") + arms[::-7].count("challenger")
        model = churn()
        r = client.post("/predict", json={"features": [[x[f] for f in model.feature_names] for x in recs[:50]]})
        assert r.json()["routed_by"] == "request_id"
        assert {p["arm"] for p in r.json()["predictions"]} == {"champion", "challenger"}


def test_shadow_answers_with_the_champion_and_logs_the_challengers_score(champion_only):
    reg = champion_only
    reg.set_aliases(reg.v1, reg.v2)
    app, log = app_for(churn(ab_test={"mode": "shadow"}))
    with TestClient(app) as client:
        recs = rows(20, seed="shadow")
        for i, x in enumerate(recs):
            x["request_id"] = f"s{i}"
        r = client.post("/predict", json={"instances": recs})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["mode"] == "shadow"
        assert {(p["arm"], p["model_version"]) for p in doc["predictions"]} == {("champion", reg.v1)}
        assert [p["score"] for p in doc["predictions"]] == expected_scores(reg.pipelines[reg.v1], recs)
        deadline = time.monotonic() + 5
        while len(log.records) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        shadow = [x for x in log.records if x["arm"] == "shadow"]
        served = [x for x in log.records if x["arm"] == "champion"]
        assert [x["request_id"] for x in served] == [f"s{i}" for i in range(20)]
        assert [x["request_id"] for x in shadow] == [f"s{i}~shadow" for i in range(20)]
        assert {x["model_version"] for x in shadow} == {reg.v2} and {x["model"] for x in shadow} == {"churn"}
        assert [x["entity_id"] for x in shadow] == [x["entity_id"] for x in served]
        assert [x["ts"] for x in shadow] == [x["ts"] for x in served]
        assert [x["score"] for x in shadow] == expected_scores(reg.pipelines[reg.v2], recs)
        text = client.get("/metrics").text
        assert metric_value(text, "evergreen_shadow_predictions_total", version=reg.v2) == 20
        assert metric_value(text, "evergreen_predictions_total", arm="champion") == 20
        # /batch_predict scores the shadow as its own call too
        batch = [{**x, "request_id": f"b{i}"} for i, x in enumerate(recs)]
        r = client.post("/batch_predict", json={"instances": batch})
        assert {p["arm"] for p in r.json()["predictions"]} == {"champion"}
    ids = [x["request_id"] for x in log.records]
    assert {f"b{i}~shadow" for i in range(20)} <= set(ids) and {f"b{i}" for i in range(20)} <= set(ids)


# --- errors -------------------------------------------------------------------------------------------------------


def _bad_requests():
    model = churn()
    rec = rows(1)[0]
    row = [rec[f] for f in model.feature_names]
    return [
        # (name, path, body (dict) or raw bytes, status, fragment of the error)
        ("not json", "/predict", b"{not json", 400, "not valid JSON"),
        ("not an object", "/predict", [1, 2], 400, "expected a JSON object"),
        ("both formats", "/predict", {"instances": [rec], "features": [row]}, 400, "exactly one of"),
        ("unknown body field", "/predict", {"instances": [rec], "extra": 1}, 400, "unknown field 'extra'"),
        ("unknown feature", "/predict", {"instances": [{**rec, "age": 3}]}, 400, "unknown field 'age'"),
        ("missing feature", "/predict", {"instances": [{k: v for k, v in rec.items() if k != "plan"}]}, 400,
         "feature 'plan' missing"),
        ("missing entity id", "/predict", {"instances": [{k: v for k, v in rec.items() if k != "customer_id"}]}, 400,
         "entity id 'customer_id' is missing"),
        ("row too short", "/predict", {"features": [row[:-1]]}, 400, "6 values; expected 7"),
        ("nested value", "/predict", {"features": [[[1], *row[1:]]]}, 400, "a list is not a feature value"),
        ("duplicate request id", "/predict", {"features": [row, row], "request_ids": ["a", "a"]}, 400,
         "request id 'a' appears twice"),
        ("request id too long", "/predict", {"features": [row], "request_id": "x" * 200}, 400, "1 to 121 characters"),
        ("shadow id", "/predict", {"features": [row], "request_id": "a~shadow"}, 400, "may not end in '~shadow'"),
        ("no rows", "/predict", {"instances": []}, 400, "no rows"),
        ("wrong type", "/predict", {"instances": [{**rec, "monthly_charges": "cheap"}]}, 422,
         "column 'monthly_charges': 'cheap' is not a number"),
        ("not an int", "/predict", {"instances": [{**rec, "support_calls": 2.5}]}, 422, "2.5 is not an int"),
        ("unknown category", "/predict", {"instances": [{**rec, "region": "mars"}]}, 422,
         "'mars' is not one of the categories"),
        ("out of range", "/predict", {"instances": [{**rec, "tenure_months": 601}]}, 422, "above the maximum 600"),
        ("null not allowed", "/predict", {"instances": [{**rec, "plan": None}]}, 422, "the feature is not nullable"),
        ("not a bool", "/predict", {"instances": [{**rec, "autopay": "maybe"}]}, 422, "is not a bool"),
        ("too many rows", "/predict", {"features": [row] * 11}, 413, "the limit is 10 rows"),
        ("body too large", "/predict", b" " * 5000, 413, "the limit is 4096 bytes"),
        ("unknown model", "/v2/models/fraud/infer", {"inputs": []}, 404, "model 'fraud' is not served here"),
        ("unknown version", "/v1/models/churn/versions/7:predict", {"instances": [rec]}, 404, "version '7'"),
    ]


@pytest.mark.parametrize("case", _bad_requests(), ids=lambda c: c[0])
def test_bad_requests_get_a_4xx_naming_the_problem_and_are_counted(champion_only, case):
    name, path, body, status, fragment = case
    app, log = app_for(churn(serving={"max_request_rows": 10, "max_body_bytes": 4096}))
    with TestClient(app) as client:
        if isinstance(body, bytes):
            r = client.post(path, content=body, headers={"content-type": "application/json"})
        else:
            r = client.post(path, json=body)
        assert r.status_code == status, r.text
        assert fragment in r.json()["error"], r.json()
        assert log.records == []
        text = client.get("/metrics").text
        assert sum(v for labels, v in metric_samples(text, "evergreen_request_errors_total")) == 1


def test_a_422_names_every_bad_row(client):
    recs = rows(3)
    recs[0]["region"] = "mars"
    recs[2]["tenure_months"] = -1
    r = client.post("/predict", json={"instances": recs})
    assert r.status_code == 422
    assert [p["row"] for p in r.json()["problems"]] == [0, 2]
    assert "row 0: column 'region'" in r.json()["error"] and "row 2: column 'tenure_months'" in r.json()["error"]


def test_a_string_number_is_accepted_as_the_ingestion_contract_accepts_it(client, champion_only):
    rec = rows(1)[0]
    as_text = {**rec, "tenure_months": str(rec["tenure_months"]), "autopay": "yes" if rec["autopay"] else "no"}
    a = client.post("/predict", json={"instances": [rec]}).json()["predictions"][0]["score"]
    b = client.post("/predict", json={"instances": [as_text]}).json()["predictions"][0]["score"]
    assert a == b


class FaultyPipeline:
    """The real pipeline, except that it raises on any row with support_calls == 199 (a valid value)."""

    def __init__(self, real):
        self.real = real
        self.classes_ = real.classes_

    def predict_proba(self, X):
        if (X["support_calls"] == 199).any():
            raise RuntimeError("simulated model failure")
        return self.real.predict_proba(X)


class FaultySource:
    def __init__(self):
        self.real = source()

    def aliases(self):
        return self.real.aliases()

    def load(self, version):
        return FaultyPipeline(self.real.load(version))


def test_a_model_error_is_a_500_and_is_counted(champion_only):
    app, log = app_for(src=FaultySource())
    with TestClient(app) as client:
        rec = rows(1)[0]
        r = client.post("/predict", json={"instances": [{**rec, "support_calls": 199}]})
        assert r.status_code == 500 and "simulated model failure" in r.json()["error"]
        assert client.post("/predict", json={"instances": [rec]}).status_code == 200  # the next request is fine
        text = client.get("/metrics").text
        assert metric_value(text, "evergreen_model_errors_total", version=champion_only.v1, arm="champion") == 1
        assert metric_value(text, "evergreen_request_errors_total", reason="model_error") == 1
        assert metric_value(text, "evergreen_requests_total", code="500") == 1
        assert len(log.records) == 1


@pytest.mark.parametrize("policy, status", [("answer", 200), ("refuse", 503)])
def test_a_full_prediction_log_is_answered_by_the_policy(champion_only, policy, status):
    app, log = app_for(churn(serving={"log_full": policy}), log=RecordingLog(accept=False))
    with TestClient(app) as client:
        r = client.post("/predict", json={"instances": rows(2)})
        assert r.status_code == status, r.text
        if status == 200:
            assert r.json()["logged"] is False and r.headers["X-Evergreen-Logged"] == "false"
        else:
            assert "prediction log is full" in r.json()["error"]
        text = client.get("/metrics").text
        assert metric_value(text, "evergreen_prediction_log_refused_total") == 2


# --- metrics ------------------------------------------------------------------------------------------------------


def test_metrics_follow_prometheus_conventions(client):
    client.post("/predict", json={"instances": rows(2)})
    text = client.get("/metrics").text
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    for name in ("evergreen_predictions_total", "evergreen_request_duration_seconds", "evergreen_prediction_score",
                 "evergreen_batch_rows", "evergreen_request_errors_total", "evergreen_model_errors_total",
                 "evergreen_model_info", "evergreen_prediction_log_queue_depth",
                 "evergreen_prediction_log_spooled_bytes", "evergreen_prediction_log_shipped_total",
                 "evergreen_prediction_log_refused_total"):
        assert any(f == name or f"{f}_total" == name for f in families), name
    for line in text.splitlines():
        if line.startswith("# TYPE") and line.endswith(" counter"):
            assert line.split()[2].startswith("evergreen_")
    assert metric_value(text, "evergreen_model_info", arm="champion", version=client.app.state.server.deployment
                        .champion.version) == 1
    assert metric_value(text, "evergreen_prediction_score_count") == 2  # the warm-up row is not a prediction


def test_drift_gauges_come_from_the_latest_drift_record(champion_only, tmp_path):
    from evergreen.store import open_store
    from evergreen.store.base import Record

    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)

    def record(day, share, score):
        return Record("drift", f"churn/{day.date()}", "churn", day, {
            "status": "ok", "dataset_drift": share >= 0.5, "drifted_share": share,
            "features": [{"feature": "tenure_months", "method": "ks", "score_kind": "p_value", "score": score,
                          "drifted": score <= 0.05, "status": "ok"},
                         {"feature": "plan", "method": "chisquare", "score_kind": "p_value", "score": None,
                          "drifted": None, "status": "cannot_judge"}]})

    store.put_record(record(today - dt.timedelta(days=2), 0.0, 0.9))
    store.put_record(record(today - dt.timedelta(days=1), 0.6, 0.01))
    store.put_record(Record("drift", "other/x", "other", today, {"drifted_share": 1.0}))
    app, _ = app_for(store_factory=lambda: store)
    with TestClient(app) as client:
        text = client.get("/metrics").text
    assert metric_value(text, "evergreen_feature_drift_score", feature="tenure_months", method="ks",
                        score_kind="p_value") == pytest.approx(0.01)
    assert metric_value(text, "evergreen_feature_drifted", feature="tenure_months") == 1
    assert 'evergreen_feature_drift_score{feature="plan"' not in text
    assert metric_value(text, "evergreen_dataset_drift_share") == pytest.approx(0.6)
    assert metric_value(text, "evergreen_dataset_drift") == 1
    assert metric_value(text, "evergreen_drift_window_start_timestamp_seconds") == \
        (today - dt.timedelta(days=1)).timestamp()


def test_the_app_starts_and_closes_the_log_it_is_given(champion_only):
    app, log = app_for()
    with TestClient(app):
        assert log.started and not log.closed
    assert log.closed


def test_a_serving_process_freezes_what_it_loaded_out_of_the_collectors_reach(champion_only):
    """python -m evergreen.serve passes freeze_gc: the libraries and versions loaded at a swap are never walked by a
    full collection again (one took ~260 ms under load: the p99)."""
    import gc

    before = gc.get_freeze_count()
    app = create_app(churn(), prediction_log=RecordingLog(), source=source(), freeze_gc=True)
    try:
        with TestClient(app) as c:
            assert gc.get_freeze_count() > before
            assert c.post("/predict", json={"instances": rows(1)}).status_code == 200
    finally:
        gc.unfreeze()  # this test process serves more than one app


def test_no_prediction_log_and_no_spool_dir_is_an_error_naming_it():
    with pytest.raises(ValueError, match="spool_dir"):
        create_app(churn(), source=source())


def test_serving_policy_is_validated_by_the_config_loader(tmp_path):
    import shutil

    from evergreen.config import ConfigError, load_config
    from evergreen.paths import config_dir

    shutil.copy(config_dir() / "churn.yaml", tmp_path / "churn.yaml")
    text = (tmp_path / "churn.yaml").read_text()
    (tmp_path / "churn.yaml").write_text(text + "    serving: {log_full: drop}\n")
    with pytest.raises(ConfigError, match=r"serving\.log_full: 'drop' is not allowed; expected one of answer, "):
        load_config(tmp_path)
    (tmp_path / "churn.yaml").write_text(text + "    serving: {log_full: refuse, max_batch_rows: 64}\n")
    assert load_config(tmp_path).model("churn").serving.log_full == "refuse"


def test_a_pinned_request_is_logged_as_pinned_not_as_ab_traffic(champion_only):
    """TF Serving's /labels/<l> and /versions/<v> name the model: those rows were not routed, so the prediction log
    marks them pinned and the A/B analysis never counts them as an arm's traffic."""
    reg = champion_only
    reg.set_aliases(reg.v1, reg.v2)
    app, log = app_for(churn(ab_test={"mode": "split", "challenger_share": 0.5}))
    with TestClient(app) as client:
        recs = rows(20, seed="pinned")
        r = client.post("/v1/models/churn/labels/challenger:predict", json={"instances": recs})
        assert r.status_code == 200, r.text
        assert {p["model_version"] for p in r.json()["predictions"]} == {reg.v2}
        assert {x["arm"] for x in log.records} == {"pinned"}
        assert {x["model_version"] for x in log.records} == {reg.v2}
        log.records.clear()
        client.post("/predict", json={"instances": recs})
        assert {x["arm"] for x in log.records} <= {"champion", "challenger"}


def test_a_challenger_that_fails_to_load_never_blocks_the_champion(champion_only, monkeypatch):
    """A moved champion (a promotion, a rollback) is served even when the challenger's artifact is broken: the app
    serves the new champion alone and counts the challenger's load failure."""
    from evergreen.serve import app as app_module

    reg = champion_only
    app, _ = app_for(churn(ab_test={"mode": "split", "challenger_share": 0.5}))
    with TestClient(app) as client:
        assert client.post("/predict", json={"instances": rows(3)}).json()["predictions"][0]["model_version"] == \
            reg.v1
        real = app_module.load_version

        def broken_challenger(model, src, version):
            if version == reg.v1:  # the old champion becomes the challenger, and its artifact is now unreadable
                raise OSError("artifact unreadable")
            return real(model, src, version)

        monkeypatch.setattr(app_module, "load_version", broken_challenger)
        client.app.state.server.loaded.clear()
        reg.set_aliases(reg.v2, reg.v1)
        refresh(client)
        answer = client.post("/predict", json={"instances": rows(50, seed="after")}).json()
        assert {p["model_version"] for p in answer["predictions"]} == {reg.v2}
        assert {p["arm"] for p in answer["predictions"]} == {"champion"}
        assert metric_value(client.get("/metrics").text, "evergreen_model_load_errors_total") >= 1
