"""The demo's state fingerprint: a digest of what the scenario leaves behind that does not depend on when or where.

Re-running the demo, in this home or another, must leave the same data, candidate and monitoring verdicts; the
fingerprint makes that checkable in one line (the report prints it, tests/test_demo.py compares two runs).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from evergreen import lake, tracking
from evergreen.paths import home
from evergreen_demo.runner import latest_candidate

if TYPE_CHECKING:
    from evergreen_demo.runner import Demo

#: version tags that depend only on the data, the config and the code (not on run ids, paths or times)
_DETERMINISTIC_TAGS = ("status", "training_window", "data_fingerprint", "holdout_rows", "training_rows", "estimator",
                       "hyperparameters")


def state_fingerprint(demo: Demo) -> str:
    """16 hex digits of :func:`state_digest`: the same scenario gives the same fingerprint in any home."""
    text = json.dumps(state_digest(demo), sort_keys=True, default=str)
    return hashlib.sha256(_placeholders(text).encode()).hexdigest()[:16]


def _placeholders(text: str) -> str:
    """``text`` with the locations of this install (lake, landing zone, home, checkout) as placeholders: quarantine
    reasons and ingestion records name the files they came from, which is right for people but not for a
    fingerprint meant to be the same in every home."""
    from evergreen.paths import REPO_ROOT, lake_uri, landing_uri

    # most specific first: the default home (and the lake and landing zone in it) lies inside the checkout
    for root, name in ((lake_uri(), "<lake>"), (landing_uri(), "<landing>"), (str(home().root), "<home>"),
                       (str(REPO_ROOT), "<checkout>")):
        text = text.replace(root.rstrip("/"), name)
    return text


def state_digest(demo: Demo) -> dict[str, Any]:
    """The deterministic part of the demo's state, canonical for hashing: ingestion's own digest (its records and
    quarantine partitions re-hashed with :func:`_placeholders`: they name files), the newest candidate's content, and
    the monitoring records without their run ids."""
    from evergreen.ingest.tasks import RECORD_KIND, frame_digest
    from evergreen.ingest.tasks import state_digest as ingestion_digest

    model = demo.model
    digest: dict[str, Any] = dict(ingestion_digest(demo.store, model.name, demo.landing_days))
    records = [[r.key, r.ts.isoformat(), r.payload] for r in demo.store.list_records(RECORD_KIND, model.name)]
    digest[f"store/records/{RECORD_KIND}"] = {
        "rows": len(records),
        "sha256": hashlib.sha256(_placeholders(json.dumps(records, sort_keys=True, default=str)).encode()).hexdigest(),
    }
    for key in [k for k in digest if k.startswith("lake/quarantine/dt=")]:
        day, name = key.removeprefix("lake/quarantine/dt=").split("/", 1)
        frame = lake.read_parquet(f"{lake.partition_dir(model.name, 'quarantine', day)}/{name}")
        for column in frame.columns[frame.dtypes == object]:
            frame[column] = frame[column].map(lambda v: _placeholders(v) if isinstance(v, str) else v)
        digest[key] = {**digest[key], **frame_digest(frame)}
    candidate = latest_candidate(demo.registry(), model.name)
    if candidate is not None:
        tags = dict(candidate.tags or {})
        digest["mlflow/candidate"] = {
            **{k: tags.get(f"{tracking.TAG}{k}") for k in _DETERMINISTIC_TAGS},
            **{k: v for k, v in tags.items() if k.startswith(f"{tracking.TAG}metric.")},
        }
    for kind in ("drift", "performance"):
        record = demo.store.get_record(kind, f"{model.name}/{demo.last_day}")
        if record is not None:
            payload = {k: v for k, v in record.payload.items() if k not in ("mlflow", "airflow")}
            digest[f"store/records/{kind}/{record.key}"] = [record.ts.isoformat(), payload]
    return digest
