"""The lake and the landing zone on an S3 API, end to end: outcome files landed in an S3 landing zone are ingested
into an S3 lake, a training window is read back from it and a model version's reference statistics are saved to
it and loaded again -- each step through the code the DAGs run, with nothing but ``EVERGREEN_LANDING_URI`` /
``EVERGREEN_LAKE_URI`` (and the standard AWS environment) changed.

The S3 API is moto's server mode on 127.0.0.1 (tests/s3_server.py); nothing leaves the machine. Every S3 result is
compared with the same input run on local folders: "any fsspec URI" means the same partitions, the same training
rows and the same reference, not merely no error.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import types
from pathlib import Path

import pandas as pd
import pytest
from s3_server import S3, moto_s3, s3  # noqa: F401  (pytest fixtures)

from evergreen import lake
from evergreen.config import get_config
from evergreen.ingest import tasks
from evergreen.store.sql import SqlStore
from evergreen_demo import simulate

MODEL = get_config().model("churn")
PRED_DAYS = [dt.date(2026, 11, 1) + dt.timedelta(days=i) for i in range(4)]  # outcomes land the day after each
LANDING_DAYS = [d + dt.timedelta(days=1) for d in PRED_DAYS]
ROWS = 250


def _csv(frame: pd.DataFrame) -> bytes:
    frame = frame.copy()
    frame[MODEL.timestamp] = frame[MODEL.timestamp].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return frame.to_csv(index=False).encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def landed_files(store: SqlStore) -> dict[tuple[dt.date, str], bytes]:
    """Four landing days of files as source systems export them, the predictions they answer logged in ``store``:
    outcome-only CSV and Parquet, a history export carrying its own features, and bad rows."""
    days = [simulate.simulate_day(MODEL, d, ROWS) for d in PRED_DAYS]
    for i, d in enumerate(days):
        if i != 2:  # day 3's predictions were never logged: its file is a history export with features
            store.upsert_predictions(MODEL.name, d.predictions, MODEL.feature_names)
    bad = pd.DataFrame({MODEL.request_id: [days[0].outcomes["request_id"].iloc[0], "ghost", "churn-x"],
                        MODEL.timestamp: ["2026-11-02T09:00:00Z", "2026-11-02T09:00:00Z", "whenever"],
                        MODEL.label.name: ["1", "0", "1"]})
    out = [simulate.outcome_file_frame(MODEL, d) for d in days]
    return {
        (LANDING_DAYS[0], "outcomes.csv"): _csv(out[0]),
        (LANDING_DAYS[0], "zz-bad.csv"): bad.to_csv(index=False).encode(),  # a correction, an unmatched, a bad ts
        (LANDING_DAYS[1], "outcomes.parquet"): _parquet(out[1]),
        (LANDING_DAYS[2], "history.parquet"): _parquet(simulate.outcome_file_frame(MODEL, days[2], True)),
        (LANDING_DAYS[3], "a.csv"): _csv(out[3].iloc[: ROWS // 2]),
        (LANDING_DAYS[3], "b.parquet"): _parquet(out[3].iloc[ROWS // 2 :]),
    }


def _counts(results: list[tasks.DayResult]) -> list[tuple]:
    return [(r.day, r.rows_read, r.landed, r.quarantined, r.unmatched, r.reasons, [f.rsplit("/", 1)[-1] for f in
             r.files]) for r in results]


@pytest.fixture
def s3_lake(s3, monkeypatch) -> S3:
    """The session's lake and landing zone moved to the test's bucket, the way an operator moves them."""
    monkeypatch.setenv("EVERGREEN_LAKE_URI", f"{s3.uri}/lake")
    monkeypatch.setenv("EVERGREEN_LANDING_URI", f"{s3.uri}/landing")
    return s3


def test_ingest_train_window_and_reference_on_s3_match_the_same_run_on_local_folders(s3_lake, tmp_path):
    from evergreen.monitor.drift import compute_drift
    from evergreen.monitor.reference import build_reference, load_reference, save_reference
    from evergreen.monitor.tasks import champion_reference
    from evergreen.tracking import TRAINING_WINDOW_TAG
    from evergreen.train.data import Window, load_window, prepare

    s3 = s3_lake
    local_landing, local_lake = str(tmp_path / "landing"), str(tmp_path / "lake")
    s3_store, local_store = SqlStore(f"sqlite:///{tmp_path / 's3.db'}"), SqlStore(f"sqlite:///{tmp_path / 'local.db'}")
    try:
        files = landed_files(s3_store)
        landed_files(local_store)
        for (day, name), body in files.items():
            # S3: put by a source system with its own client, behind the platform's back
            s3.put(f"landing/{MODEL.name}/dt={day}/{name}", body)
            local = Path(lake.landing_dir(MODEL.name, day, local_landing)) / name
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(body)

        # --- ingestion: the task's entry point, lake and landing zone from the environment -----------------------
        start, end = LANDING_DAYS[0], LANDING_DAYS[-1] + dt.timedelta(days=1)
        on_s3 = tasks.ingest_interval(MODEL, start, end, s3_store)
        on_disk = tasks.ingest_interval(MODEL, start, end, local_store, landing_root=local_landing,
                                        lake_root=local_lake)
        assert _counts(on_s3) == _counts(on_disk)
        assert [(r.landed, r.quarantined, r.reasons) for r in on_s3] == [
            (ROWS, 3, {"bad_timestamp": 1, "superseded": 1, "unmatched": 1}), (ROWS, 0, {}),
            (ROWS, 0, {}), (ROWS, 0, {})]
        assert on_s3[0].files == [f"{s3.uri}/landing/churn/dt={LANDING_DAYS[0]}/outcomes.csv",
                                  f"{s3.uri}/landing/churn/dt={LANDING_DAYS[0]}/zz-bad.csv"]
        assert s3.keys("lake/") == sorted(f"lake/churn/{ds}/dt={d}/part-0.parquet" for d in LANDING_DAYS
                                          for ds in ("labelled", "quarantine"))  # and no temp file left over
        for s3_result, local_result in zip(on_s3, on_disk):
            assert s3_result.labelled_uri == f"{s3.uri}/lake/churn/labelled/dt={s3_result.day}/part-0.parquet"
            pd.testing.assert_frame_equal(lake.read_parquet(s3_result.labelled_uri),
                                          lake.read_parquet(local_result.labelled_uri))
            quarantine = lake.read_parquet(s3_result.quarantine_uri)
            expected = lake.read_parquet(local_result.quarantine_uri)
            expected["source_file"] = expected["source_file"].str.replace(local_landing, f"{s3.uri}/landing")
            pd.testing.assert_frame_equal(quarantine, expected)
        assert set(lake.read_parquet(on_s3[2].labelled_uri)["source"]) == {"file"}
        pd.testing.assert_frame_equal(s3_store.read_outcomes(MODEL.name), local_store.read_outcomes(MODEL.name))
        assert s3_store.get_record("ingestion", f"churn/{LANDING_DAYS[0]}").payload["quarantine_uri"] == (
            f"{s3.uri}/lake/churn/quarantine/dt={LANDING_DAYS[0]}/part-0.parquet")
        again = tasks.state_digest(s3_store, MODEL.name, LANDING_DAYS)
        tasks.ingest_interval(MODEL, start, end, s3_store)  # a re-run over S3 leaves the same state
        assert tasks.state_digest(s3_store, MODEL.name, LANDING_DAYS) == again

        # --- the training window, read from the S3 lake -----------------------------------------------------------
        window = Window.parse(start, end)
        frame, partitions = load_window(MODEL, window)
        local_frame, _ = load_window(MODEL, window, local_lake)
        assert partitions == [r.labelled_uri for r in on_s3]
        pd.testing.assert_frame_equal(frame, local_frame)
        prepared, local_prepared = prepare(MODEL, window), prepare(MODEL, window, lake_root=local_lake)
        assert prepared.fingerprint == local_prepared.fingerprint and len(prepared.train) + len(prepared.holdout) == (
            4 * ROWS)
        pd.testing.assert_frame_equal(prepared.holdout, local_prepared.holdout)

        # --- reference statistics of the version trained on that window, saved to and loaded from S3 --------------
        ref = build_reference(frame, MODEL, MODEL.drift.report_sample_size, version=1)
        uri = lake.reference_dir(MODEL.name, 1)
        assert uri == f"{s3.uri}/lake/churn/reference/version=1"
        save_reference(ref, uri)
        save_reference(ref, lake.reference_dir(MODEL.name, 1, local_lake))
        names = ["numeric.parquet", "sample.parquet", "stats.json"]
        assert s3.keys("lake/churn/reference/") == [f"lake/churn/reference/version=1/{n}" for n in names]
        for name in names:  # byte for byte what the local lake holds
            body = s3.client.get_object(Bucket=s3.bucket, Key=f"lake/churn/reference/version=1/{name}")["Body"].read()
            assert body == (tmp_path / "lake" / "churn" / "reference" / "version=1" / name).read_bytes(), name
        loaded = load_reference(uri)
        assert (loaded.model, loaded.version, loaded.n_rows) == ("churn", "1", len(frame))
        for feature, original in ref.features.items():
            again_f = loaded.features[feature]
            assert (again_f.kind, again_f.n, again_f.n_null, again_f.exact, again_f.mean, again_f.std) == (
                original.kind, original.n, original.n_null, original.exact, original.mean, original.std)
            assert again_f.values.tolist() == original.values.tolist()
            assert again_f.weights.tolist() == original.weights.tolist()
        pd.testing.assert_frame_equal(loaded.sample, ref.sample)
        current = simulate.simulate_day(MODEL, dt.date(2026, 11, 20), 500, drift=0.5).predictions
        assert compute_drift(loaded, current, MODEL).to_dict() == compute_drift(ref, current, MODEL).to_dict()

        # ... and the way monitor_drift gets it: built once from the champion's window in the S3 lake, then loaded
        champion = types.SimpleNamespace(version="2", tags={TRAINING_WINDOW_TAG: window.tag})
        built, built_uri, built_now = champion_reference(MODEL, champion, s3_store)
        assert (built_uri, built_now, built.n_rows) == (f"{s3.uri}/lake/churn/reference/version=2", True, len(frame))
        _, _, built_now = champion_reference(MODEL, champion, s3_store)
        assert built_now is False
        assert s3_store.get_record("reference", "churn/version=2").payload["partitions"] == partitions
    finally:
        s3_store.close()
        local_store.close()


@pytest.mark.slow
def test_ingest_feedback_dag_run_reads_and_writes_s3(s3_lake, run_dag, tmp_path, monkeypatch):
    """The DAG as Airflow runs it (``dag.test()``), the store from an ``AIRFLOW_CONN_*`` variable, S3 for the rest."""
    s3 = s3_lake
    monkeypatch.setenv("AIRFLOW_CONN_EVERGREEN_STORE",
                       json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "store.db")}))
    store = SqlStore(f"sqlite:///{tmp_path / 'store.db'}")
    pred_day = dt.date(2027, 8, 1)  # far from the other DAG tests' days: the Airflow DB is the session's
    day = pred_day + dt.timedelta(days=1)
    try:
        d = simulate.simulate_day(MODEL, pred_day, 80)
        store.upsert_predictions(MODEL.name, d.predictions, MODEL.feature_names)
        out = simulate.outcome_file_frame(MODEL, d)
        s3.put(f"landing/churn/dt={day}/outcomes.csv", _csv(out.iloc[:50]))
        s3.put(f"landing/churn/dt={day}/late.parquet", _parquet(out.iloc[50:]))
        s3.put(f"landing/churn/dt={day}/ghost.csv", b"request_id,ts,churned\nghost,2027-08-02T01:00:00Z,1\n")

        dr = run_dag("ingest_feedback_churn", f"{day + dt.timedelta(days=1)}T01:00:00+00:00")

        assert {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()} == {
            "ingest": "success"}
        payload = store.get_record("ingestion", f"churn/{day}").payload
        assert (payload["rows_read"], payload["landed"], payload["quarantined"], payload["unmatched"]) == (81, 80, 1, 1)
        assert payload["labelled_uri"] == f"{s3.uri}/lake/churn/labelled/dt={day}/part-0.parquet"
        assert sorted(lake.read_parquet(payload["labelled_uri"])["request_id"]) == sorted(d.predictions["request_id"])
        assert list(lake.read_parquet(payload["quarantine_uri"])["reason_code"]) == ["unmatched"]
        assert s3.keys("lake/") == [f"lake/churn/labelled/dt={day}/part-0.parquet",
                                    f"lake/churn/quarantine/dt={day}/part-0.parquet"]
    finally:
        store.close()
