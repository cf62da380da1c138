"""The monitoring task bodies' own rules, without Airflow or MLflow: what a record keeps of the task instance, why
a champion without a usable training-window tag cannot be judged, and the report's deterministic sample."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from evergreen.config import get_config
from evergreen.monitor.report import report_sample
from evergreen.monitor.tasks import CannotJudge, _airflow_record, champion_reference
from evergreen.tracking import TRAINING_WINDOW_TAG


def test_records_keep_the_same_airflow_facts():
    ti = SimpleNamespace(dag_id="monitor_drift_churn", run_id="scheduled__2027-04-11", task_id="detect",
                         map_index=-1, try_number=2)
    run = SimpleNamespace(run_type=SimpleNamespace(value="scheduled"))
    assert _airflow_record({"ti": ti, "dag_run": run}) == {
        "dag_id": "monitor_drift_churn", "run_id": "scheduled__2027-04-11", "task_id": "detect", "try_number": 2,
        "run_type": "scheduled",
    }


@pytest.mark.parametrize(("tags", "says"), [({}, "has no tag"), ({TRAINING_WINDOW_TAG: "last week"}, "is not")])
def test_a_champion_without_a_usable_training_window_cannot_be_judged(tags, says):
    version = SimpleNamespace(version="9001", tags=tags)
    with pytest.raises(CannotJudge, match="version 9001") as caught:
        champion_reference(get_config().model("churn"), version, store=None)
    assert TRAINING_WINDOW_TAG in str(caught.value) and says in str(caught.value)


def test_report_sample_is_bounded_and_deterministic():
    frame = pd.DataFrame({"x": range(100)})
    a, b = report_sample(frame, 10, "churn/2027-04-12"), report_sample(frame, 10, "churn/2027-04-12")
    assert len(a) == 10 and a.equals(b) and a["x"].is_monotonic_increasing
    assert not a.equals(report_sample(frame, 10, "churn/2027-04-13"))
    assert report_sample(frame, 500, "any").equals(frame)


# --- the champion's reference: the one saved at registration, checked against the version's fingerprint -----------

FP_TRAINED = "1" * 64
FP_OTHER = "2" * 64


@pytest.fixture(scope="module")
def training_rows():
    import datetime as dt

    from evergreen_demo.simulate import labelled_frame, simulate_day

    model = get_config().model("churn")
    return labelled_frame(model, simulate_day(model, dt.date(2027, 5, 1), 600))


def _version(number: str, **tags):
    return SimpleNamespace(version=number, tags={TRAINING_WINDOW_TAG: "2027-05-02/2027-05-03", **tags})


def _saved(tmp_path, rows, fingerprint=FP_TRAINED, number="41"):
    from evergreen import lake
    from evergreen.monitor.reference import save_training_reference

    model = get_config().model("churn")
    uri = lake.reference_dir("churn", number, root=str(tmp_path))
    save_training_reference(rows, model, version=number, data_fingerprint=fingerprint, uri=uri)
    return uri


def test_the_reference_saved_at_registration_is_loaded_when_its_fingerprint_matches(tmp_path, training_rows):
    from evergreen.monitor.reference import DATA_FINGERPRINT_TAG, REFERENCE_URI_TAG, SOURCE_TRAINING_ROWS

    uri = _saved(tmp_path, training_rows)
    version = _version("41", **{REFERENCE_URI_TAG: uri, DATA_FINGERPRINT_TAG: FP_TRAINED})
    ref, got_uri, built = champion_reference(get_config().model("churn"), version, store=None)
    assert (got_uri, built, ref.source, ref.data_fingerprint) == (uri, False, SOURCE_TRAINING_ROWS, FP_TRAINED)
    assert ref.n_rows == len(training_rows)


@pytest.mark.parametrize(("version_fp", "says"), [(FP_OTHER, FP_OTHER), (None, "fingerprint none")])
def test_a_reference_of_other_data_cannot_be_judged_naming_both_fingerprints(tmp_path, training_rows, version_fp,
                                                                             says):
    from evergreen.monitor.reference import DATA_FINGERPRINT_TAG, REFERENCE_URI_TAG

    uri = _saved(tmp_path, training_rows)
    tags = {REFERENCE_URI_TAG: uri, **({DATA_FINGERPRINT_TAG: version_fp} if version_fp else {})}
    with pytest.raises(CannotJudge) as caught:
        champion_reference(get_config().model("churn"), _version("41", **tags), store=None)
    message = str(caught.value)
    assert FP_TRAINED in message and says in message and "champion version 41" in message and uri in message
    # not rebuilt: the stored reference is untouched
    from evergreen.monitor.reference import load_reference

    assert load_reference(uri).data_fingerprint == FP_TRAINED


def test_a_reference_without_its_fingerprint_is_refused_when_the_version_was_registered_with_one(tmp_path,
                                                                                                training_rows):
    from evergreen import lake
    from evergreen.monitor.reference import (
        DATA_FINGERPRINT_TAG,
        REFERENCE_URI_TAG,
        build_reference,
        save_reference,
    )

    model = get_config().model("churn")
    uri = lake.reference_dir("churn", "42", root=str(tmp_path))
    save_reference(build_reference(training_rows, model, version="42"), uri)  # a lake-window rebuild: no fingerprint
    version = _version("42", **{REFERENCE_URI_TAG: uri, DATA_FINGERPRINT_TAG: FP_TRAINED})
    with pytest.raises(CannotJudge, match=rf"fingerprint none, but champion version 42 .* fingerprint {FP_TRAINED}"):
        champion_reference(model, version, store=None)


def test_a_missing_reference_of_a_version_registered_with_one_is_not_rebuilt(tmp_path):
    from evergreen.monitor.reference import DATA_FINGERPRINT_TAG, REFERENCE_URI_TAG

    uri = str(tmp_path / "churn" / "reference" / "version=43")
    version = _version("43", **{REFERENCE_URI_TAG: uri, DATA_FINGERPRINT_TAG: FP_TRAINED})
    with pytest.raises(CannotJudge, match=r"champion version 43: its reference statistics are missing at .*not "
                                          r"rebuilt from whatever the lake holds now"):
        champion_reference(get_config().model("churn"), version, store=None)  # store=None: nothing may be written


def test_a_version_registered_before_references_gets_an_explicit_recorded_lake_rebuild(training_rows):
    """The one path that builds a reference at monitoring time: no reference tag, nothing at reference_dir."""
    import datetime as dt

    from evergreen import lake
    from evergreen.monitor.reference import DATA_FINGERPRINT_TAG, SOURCE_LAKE_WINDOW

    class Records:
        def __init__(self):
            self.put = []

        def put_record(self, record):
            self.put.append(record)

    model = get_config().model("churn")
    day = dt.date(2027, 5, 2)
    lake.write_parquet_atomic(training_rows, lake.labelled_path("churn", day))
    store = Records()
    version = _version("9044", **{DATA_FINGERPRINT_TAG: FP_TRAINED})  # an old pipeline version: fingerprint, no ref
    ref, uri, built = champion_reference(model, version, store)
    assert built and uri == lake.reference_dir("churn", "9044") and ref.source == SOURCE_LAKE_WINDOW
    assert ref.data_fingerprint is None and ref.n_rows == len(training_rows)
    (record,) = store.put
    assert record.kind == "reference" and record.payload["source"] == SOURCE_LAKE_WINDOW
    assert record.payload["fingerprint_checked"] is False and "not necessarily the rows it trained on" in (
        record.payload["why"])
    # loaded as is the next time, still unchecked (there is no fingerprint to check it with)
    again, _, built_again = champion_reference(model, version, store)
    assert not built_again and again.source == SOURCE_LAKE_WINDOW and len(store.put) == 1


def test_shadow_rows_are_left_out_of_drift_and_performance(tmp_path):
    """In shadow mode the store holds the challenger's score of every request as a second row (arm shadow, request
    id <id>~shadow, the same features): monitoring reads the answered rows only, so no request counts twice."""
    import datetime as dt

    from evergreen.experiment.policy import SHADOW_ARM, shadow_request_id
    from evergreen.monitor.tasks import answered
    from evergreen.store import open_store

    model = get_config().model("churn")
    ts = dt.datetime(2026, 11, 20, 12, tzinfo=dt.timezone.utc)
    rows = []
    for i in range(4):
        base = {"entity_id": f"c{i}", "ts": ts, "prediction": 0, "score": 0.1, "tenure_months": i,
                "monthly_charges": 10.0, "total_charges": 10.0, "support_calls": 0, "plan": "basic",
                "region": "north", "autopay": True}
        rows.append({**base, "request_id": f"r{i}", "model_version": "1", "arm": "champion"})
        rows.append({**base, "request_id": shadow_request_id(f"r{i}"), "model_version": "2", "arm": SHADOW_ARM})
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    store.upsert_predictions("churn", pd.DataFrame(rows), model.feature_names)
    stored = store.read_predictions("churn")
    assert len(stored) == 8
    kept = answered(stored)
    assert sorted(kept["request_id"]) == ["r0", "r1", "r2", "r3"] and set(kept["arm"]) == {"champion"}
    split = stored.assign(arm=["champion", "challenger"] * 4)  # a split test: every row answered a request
    assert len(answered(split)) == 8


def test_a_backfill_judges_the_champion_that_served_the_day_not_todays(tmp_path):
    """A backfill recomputes a past day's fact: against the champion the ledger says held the alias then. A daily
    run judges the registry's champion now. (Without this a backfill after a promotion rewrote old drift verdicts
    against the new model's reference.)"""
    import datetime as dt

    from evergreen.monitor.tasks import judged_champion
    from evergreen.promote import ledger
    from evergreen.store import open_store

    class Registry:  # the two MLflow calls judged_champion makes
        def get_registered_model(self, name):
            return SimpleNamespace(aliases={"champion": "3"})

        def get_model_version(self, name, version):
            return SimpleNamespace(version=str(version))

    utc = dt.timezone.utc
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        for day, old, new in ((2, None, "1"), (9, "1", "3")):
            ledger.append(store, ledger.LedgerEntry(
                model="churn", event=ledger.ALIAS_MOVE, ts=dt.datetime(2026, 10, day, 0, 10, tzinfo=utc),
                actor=ledger.Actor(dag_id="promote_churn", run_id=f"r{day}"), alias="champion",
                previous_version=old, new_version=new, outcome="promote"))

        def judged(run_type, day):
            context = {"dag_run": SimpleNamespace(run_type=run_type)}
            return judged_champion(Registry(), store, "churn", context, day).version

        assert judged("backfill", dt.date(2026, 10, 6)) == "1"  # v1 served 10-02 .. 10-08
        assert judged("backfill", dt.date(2026, 10, 10)) == "3"
        assert judged("manual", dt.date(2026, 10, 6)) == "3"  # a daily run: the champion now
        assert judged("backfill", dt.date(2026, 10, 1)) == "3"  # before any ledger entry: the registry's
