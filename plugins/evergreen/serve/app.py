"""The serving app: champion and challenger of one model behind FastAPI, split or shadow, every prediction logged.

``create_app(model_config)`` builds it; ``python -m evergreen.serve --model churn`` runs it under uvicorn.

Models. ``models:/<name>@champion`` and, when set, ``@challenger`` are loaded through the platform's skops loader
(:class:`evergreen.serve.models.MlflowModelSource`) and warmed up. Every ``serving.poll_interval_s`` the app re-reads
the aliases; when one moved it builds the new :class:`Deployment` in full (new versions loaded and warmed up in a
worker thread) and then swaps one reference. A request reads that reference once and queues its rows in the same
synchronous step, so it is answered wholly by the versions it read: no request fails or mixes versions across a
swap, and the retired version's scorer finishes what was queued before it stops. A version that fails to load or
warm up is never swapped in: the app keeps serving what it has and counts the failure. Without a champion the app
is not ready (503); a champion alias removed while serving keeps the last champion (logged).

Arms. With a challenger, ``ab_test.mode: split`` routes each row by :mod:`evergreen.serve.routing` (a hash of the
entity id and the experiment id ``<model>:<challenger version>`` against ``ab_test.challenger_share``); ``shadow``
answers every row with the champion and scores it with the challenger too, off the response path. Every answered
row says its ``model_version`` and ``arm``; the prediction log gets one record per answered row and, in shadow mode,
one per shadow score (arm ``shadow``, request id ``<request id>~shadow``, see :mod:`evergreen.serve.routing`).

Request formats (the features are the model config's, ``include/config/<file>.yaml``):

* ``POST /predict`` and ``POST /batch_predict`` take either ``{"instances": [{"customer_id": "c1",
  "tenure_months": 12, ...}]}`` -- records with every feature by name, the entity id (required: it routes the A/B
  test and joins outcomes to entities) and optionally the request id -- or ``{"features": [[12, 50.5, ...]]}``,
  rows in the config's feature order, with optional parallel ``entity_ids`` / ``request_ids`` lists; rows without
  entity ids are routed by request id, and the answer says ``routed_by``. A top-level ``request_id`` names a one-row
  request's prediction (``<id>-<row>`` for more rows); otherwise each row gets a uuid4 hex. ``/predict`` goes through
  the micro-batcher; ``/batch_predict`` is scored as its own model call per arm, for offline batches.
* TensorFlow Serving's REST API: ``POST /v1/models/<name>[/versions/<v>|/labels/<champion|challenger>]:predict``
  with ``instances`` (records, or rows in feature order) or ``inputs`` (columnar ``{name: [values]}``, or rows); the
  answer is ``predictions`` (one object per row: score, prediction, model_version, arm, request_id) or ``outputs``
  (the same as columns); errors are ``{"error": ...}``. ``GET /v1/models/<name>[/versions/<v>|/labels/<l>]`` is its
  model status. A version or label pins the model (no routing).
* The Open Inference Protocol (KServe v2): ``POST /v2/models/<name>[/versions/<v>]/infer`` with one input tensor per
  feature (plus optional ``<entity id>`` and ``request_id`` tensors, BYTES), answering ``score``, ``prediction``,
  ``model_version``, ``arm`` and ``request_id`` tensors; ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/<name>[/versions/<v>]`` and ``.../ready``.
* ``GET /health`` (the process is alive), ``GET /ready`` (a champion is loaded), ``GET /metrics`` (Prometheus,
  :mod:`evergreen.serve.metrics`).

Errors name the problem: 400 for a body that is not the format (not JSON, unknown or missing feature names, a value
that is not a JSON scalar, bad ids), 422 for values the model's contract refuses (the ingestion contract's own
check: types, ranges, categories, nullability; one reason per row), 413 for too many rows
(``serving.max_request_rows``) or too large a body (``serving.max_body_bytes``), 404 for a model, version or label
not served, 503 before a champion is loaded (or, with ``serving.log_full: refuse``, when the prediction log is full),
500 when the model raises (counted in ``evergreen_model_errors_total``). Client text is only ever data in a JSON
answer: nothing reaches a shell, a template or a metric label.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import FastAPI, Request, Response  # at module level: FastAPI resolves the handlers' annotations here
from starlette.requests import ClientDisconnect

from evergreen import clock
from evergreen.experiment.policy import PINNED_ARM, SHADOW_SUFFIX
from evergreen.serve import routing
from evergreen.store.base import ID_LIMITS
from evergreen.serve.metrics import DRIFT_LOOKBACK, ServingMetrics, drift_snapshot
from evergreen.serve.models import InvalidRows, LoadedModel, ModelFailure, ModelSource, Scored, Scorer, load_version

if TYPE_CHECKING:
    from evergreen.config import ModelConfig
    from evergreen.store.base import Store

log = logging.getLogger(__name__)

# evergreen.store.base.ID_LIMITS; a request id leaves room for the shadow row's suffix, in every mode, so an id that
# works today still works when a shadow test starts
ENTITY_ID_LIMIT = ID_LIMITS["entity_id"]
REQUEST_ID_LIMIT = ID_LIMITS["request_id"] - len(SHADOW_SUFFIX)
OIP_TYPES = {"float": "FP64", "int": "INT64", "bool": "BOOL", "category": "BYTES"}
OIP_DATATYPES = frozenset({"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
                           "FP32", "FP64", "BYTES"})


class PredictionLogLike(Protocol):
    """What the app needs of :class:`evergreen.serve.predlog.PredictionLog`."""

    def start(self) -> None: ...
    def append(self, records: Sequence[Mapping[str, Any]]) -> bool: ...
    def close(self, timeout_s: float = 30.0) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class RequestError(Exception):
    """A request the app answers with an error: HTTP status, the metric's reason, the message, row problems."""

    def __init__(self, status: int, reason: str, message: str, problems: Sequence[tuple[int, str]] = ()) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.problems = status, reason, message, list(problems)


def _bad(message: str) -> RequestError:
    return RequestError(400, "bad_request", message)


# --- request bodies ------------------------------------------------------------------------------------------


@dataclass
class Rows:
    """A request's rows in the config's feature order, with their ids."""

    values: list[list[Any]]
    entity_ids: list[str | None]
    request_ids: list[str]

    @property
    def routed_by(self) -> str:
        return "entity_id" if self.entity_ids and all(e is not None for e in self.entity_ids) else "request_id"


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _check_scalar(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise _bad(f"{where}: {_kind(value)} is not a feature value; expected a number, string, boolean or null")


def _id(value: Any, where: str, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _bad(f"{where}: the {name} must be a string or an integer, not {_kind(value)}")
    text = str(value)
    limit = ENTITY_ID_LIMIT if name.startswith("entity") else REQUEST_ID_LIMIT
    if not text or len(text) > limit:
        raise _bad(f"{where}: the {name} must have 1 to {limit} characters (it has {len(text)})")
    if limit == REQUEST_ID_LIMIT and text.endswith(SHADOW_SUFFIX):
        raise _bad(f"{where}: a request id may not end in {SHADOW_SUFFIX!r}: that names the shadow score of another "
                   "request in the prediction log")
    return text


class Parser:
    """The request formats of one model: every structural check, none of the contract's (the scorer runs those)."""

    def __init__(self, model: ModelConfig, max_rows: int) -> None:
        self.model = model
        self.names = model.feature_names
        self.max_rows = max_rows
        self.allowed = {*self.names, model.entity_id, model.request_id}
        self.expected = (f"expected the features {', '.join(self.names)}, the entity id '{model.entity_id}' and "
                         f"optionally '{model.request_id}'")

    def _count(self, n: int, where: str) -> None:
        if n == 0:
            raise _bad(f"{where}: no rows; send at least one")
        if n > self.max_rows:
            raise RequestError(413, "too_large", f"{where}: {n} rows; the limit is {self.max_rows} rows per request "
                                                 "(serving.max_request_rows); split the request")

    def _request_ids(self, n: int, per_row: Sequence[Any] | None, top: Any, where: str) -> list[str]:
        if per_row is not None:
            ids = [_id(v, f"{where}[{i}]", "request id") for i, v in enumerate(per_row)]
        elif top is not None:
            base = _id(top, where, "request id")
            ids = [base] if n == 1 else [_id(f"{base}-{i}", where, "request id") for i in range(n)]
        else:
            return [uuid.uuid4().hex for _ in range(n)]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise _bad(f"{where}: request id {dup!r} appears twice; each prediction needs its own")
        return ids

    def records(self, records: Any, where: str, top_request_id: Any = None) -> Rows:
        """``[{feature: value, <entity id>: ..., <request id>?: ...}]``."""
        if not isinstance(records, list):
            raise _bad(f"{where}: expected a list of objects, got {_kind(records)}")
        self._count(len(records), where)
        model, names = self.model, self.names
        values, entities, per_row_ids = [], [], []
        any_id = False
        for i, rec in enumerate(records):
            at = f"{where}[{i}]"
            if not isinstance(rec, dict):
                raise _bad(f"{at}: expected an object with the features by name, got {_kind(rec)}")
            if len(rec) > len(self.allowed) or not rec.keys() <= self.allowed:
                unknown = sorted(k for k in rec if k not in self.allowed)
                raise _bad(f"{at}: unknown field {', '.join(map(repr, unknown[:5]))}; {self.expected}")
            try:
                row = [rec[name] for name in names]
            except KeyError:
                missing = [n for n in names if n not in rec]
                raise _bad(f"{at}: feature {', '.join(map(repr, missing))} missing; {self.expected}") from None
            for name, value in zip(names, row):
                if value is not None and type(value) not in (int, float, str, bool):
                    _check_scalar(value, f"{at}.{name}")
            values.append(row)
            if model.entity_id not in rec:
                raise _bad(f"{at}: the entity id '{model.entity_id}' is missing; records carry it (it routes the A/B "
                           "test); rows without entity ids go in the 'features' format")
            entities.append(_id(rec[model.entity_id], at, f"entity id '{model.entity_id}'"))
            rid = rec.get(model.request_id)
            any_id = any_id or rid is not None
            per_row_ids.append(rid)
        if any_id:
            missing_id = [i for i, r in enumerate(per_row_ids) if r is None]
            if missing_id:
                raise _bad(f"{where}[{missing_id[0]}]: no '{model.request_id}' while other rows have one; give "
                           "every row its request id or none")
        ids = self._request_ids(len(values), per_row_ids if any_id else None, top_request_id, where)
        return Rows(values, entities, ids)

    def rows(self, rows: Any, where: str, *, entity_ids: Any = None, request_ids: Any = None,
             top_request_id: Any = None) -> Rows:
        """``[[value, ...]]`` in the config's feature order."""
        if not isinstance(rows, list):
            raise _bad(f"{where}: expected a list of rows, got {_kind(rows)}")
        self._count(len(rows), where)
        width = len(self.names)
        for i, row in enumerate(rows):
            if not isinstance(row, list):
                raise _bad(f"{where}[{i}]: expected a row (a list of {width} values in the order "
                           f"{', '.join(self.names)}), got {_kind(row)}")
            if len(row) != width:
                raise _bad(f"{where}[{i}]: {len(row)} values; expected {width}, in the order {', '.join(self.names)}")
            for j, value in enumerate(row):
                if value is not None and type(value) not in (int, float, str, bool):
                    _check_scalar(value, f"{where}[{i}][{j}] ({self.names[j]})")
        n = len(rows)
        for name, given in (("entity_ids", entity_ids), ("request_ids", request_ids)):
            if given is not None and (not isinstance(given, list) or len(given) != n):
                raise _bad(f"{name}: expected a list of {n} ids, one per row")
        entities: list[str | None] = ([_id(v, f"entity_ids[{i}]", "entity id") for i, v in enumerate(entity_ids)]
                                      if entity_ids is not None else [None] * n)
        return Rows(rows, entities, self._request_ids(n, request_ids, top_request_id, "request_ids"))

    def columns(self, columns: Mapping[str, Any], where: str, top_request_id: Any = None) -> Rows:
        """``{name: [values]}`` (TF Serving's columnar ``inputs``): as records."""
        unknown = sorted(k for k in columns if k not in self.allowed)
        if unknown:
            raise _bad(f"{where}: unknown input {', '.join(map(repr, unknown[:5]))}; {self.expected}")
        if columns and all(not isinstance(v, list) for v in columns.values()):
            columns = {k: [v] for k, v in columns.items()}  # one row without its batch dimension
        lengths = {k: len(v) if isinstance(v, list) else -1 for k, v in columns.items()}
        if any(n < 0 for n in lengths.values()) or len(set(lengths.values())) > 1:
            raise _bad(f"{where}: every input must be a list of the same length (one value per row); got "
                       + ", ".join(f"{k}: {'not a list' if n < 0 else n}" for k, n in lengths.items()))
        n = next(iter(lengths.values()), 0)
        self._count(n, where)
        records = [{k: v[i] for k, v in columns.items()} for i in range(n)]
        return self.records(records, where, top_request_id)

    def oip(self, doc: Mapping[str, Any]) -> Rows:
        """The Open Inference Protocol's ``inputs`` tensors, one per feature (and ids), as records."""
        inputs = doc.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise _bad("inputs: expected a list of tensors {name, shape, datatype, data}, one per feature")
        columns: dict[str, list[Any]] = {}
        for i, tensor in enumerate(inputs):
            at = f"inputs[{i}]"
            if not isinstance(tensor, dict):
                raise _bad(f"{at}: expected a tensor object {{name, shape, datatype, data}}, got {_kind(tensor)}")
            name, shape, datatype, data = (tensor.get(k) for k in ("name", "shape", "datatype", "data"))
            if not isinstance(name, str):
                raise _bad(f"{at}.name: expected the feature's name")
            if name in columns:
                raise _bad(f"{at}: input '{name}' appears twice")
            if datatype not in OIP_DATATYPES:
                raise _bad(f"{at}.datatype: {datatype!r} is not an Open Inference Protocol datatype; expected one of "
                           f"{', '.join(sorted(OIP_DATATYPES))}")
            if (not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape)
                    or any(d != 1 for d in shape[1:])):
                raise _bad(f"{at}.shape: {shape!r}; expected [rows] or [rows, 1] (one value per row)")
            if not isinstance(data, list):
                raise _bad(f"{at}.data: expected a list of values")
            flat = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]
            if len(flat) != shape[0]:
                raise _bad(f"{at}: data has {len(flat)} values but the shape says {shape[0]} rows")
            columns[name] = flat
        return self.columns(columns, "inputs", doc.get("id"))


# --- deployment ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """What serves, swapped as one reference: the champion's scorer, the challenger's (or None), the A/B mode."""

    champion: Scorer
    challenger: Scorer | None
    mode: str
    share: float

    @property
    def experiment(self) -> str | None:
        if self.challenger is None:
            return None
        return routing.experiment_id(self.champion.loaded.model.name, self.challenger.version)

    @property
    def arms(self) -> dict[str, str]:
        arms = {routing.CHAMPION: self.champion.version}
        if self.challenger is not None:
            arms[routing.CHALLENGER] = self.challenger.version
        return arms

    def scorers(self) -> list[Scorer]:
        return [s for s in (self.champion, self.challenger) if s is not None]


@dataclass(frozen=True)
class Answer:
    """A request's answer: per row, the version and arm that answered with the score and predicted class."""

    rows: Rows
    versions: list[str]
    arms: list[str]
    scores: list[float]
    predictions: list[Any]
    routed_by: str
    deployment: Deployment
    logged: bool


class Server:
    """The state of one app: the deployment, its refresh, scoring a request, logging its predictions."""

    def __init__(self, model: ModelConfig, source: ModelSource, prediction_log: PredictionLogLike,
                 store_factory: Callable[[], Store] | None, metrics: ServingMetrics, *,
                 freeze_gc: bool = False) -> None:
        self.model = model
        self.freeze_gc = freeze_gc
        self.policy = model.serving
        self.source = source
        self.prediction_log = prediction_log
        self.store_factory = store_factory
        self.metrics = metrics
        self.deployment: Deployment | None = None
        self.loaded: dict[str, LoadedModel] = {}
        self.parser = Parser(model, model.serving.max_request_rows)
        self.not_ready_reason = "starting: the champion is not loaded yet"
        self._store: Store | None = None
        self._poller: asyncio.Task | None = None
        self._retired: list[Scorer] = []
        self._background: set[asyncio.Future] = set()  # shadow scores of /batch_predict, awaited at shutdown
        self._refresh_lock = asyncio.Lock()

    # --- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.prediction_log.start)
        await self.refresh()
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name="registry-poll")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        scorers = (self.deployment.scorers() if self.deployment else []) + self._retired
        for scorer in scorers:
            scorer.retire()
        await asyncio.gather(*(s.wait_closed() for s in scorers), *self._background, return_exceptions=True)
        await asyncio.to_thread(self.prediction_log.close)
        if self._store is not None:
            await asyncio.to_thread(self._store.close)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.policy.poll_interval_s)
            try:
                await self.refresh()
            except Exception:  # the poll must outlive any one failure
                log.exception("serving poll of model '%s' failed", self.model.name)

    # --- the registry -------------------------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Re-read the aliases and the latest drift record; swap in a new deployment when an alias moved.
        True when a new deployment was swapped in."""
        async with self._refresh_lock:
            await self._refresh_drift()
            return await self._refresh_models()

    async def _refresh_models(self) -> bool:
        name = self.model.name
        try:
            aliases = await asyncio.to_thread(self.source.aliases)
        except Exception as exc:
            self.metrics.poll_errors.labels(name).inc()
            log.warning("model '%s': reading the registry aliases failed (%s); serving what is loaded", name, exc)
            if self.deployment is None:
                self.not_ready_reason = f"the registry could not be read: {type(exc).__name__}"
            return False
        current = self.deployment
        champion = aliases.get(routing.CHAMPION)
        challenger = aliases.get(routing.CHALLENGER)
        if champion is None:
            if current is None:
                self.not_ready_reason = (f"model '{name}' has no version with alias 'champion' in the registry; "
                                         "promote one (promote_<model>)")
                return False
            log.warning("model '%s': the champion alias is gone from the registry; still serving version %s",
                        name, current.champion.version)
            champion = current.champion.version
        if current is not None and current.arms == {k: v for k, v in ((routing.CHAMPION, champion),
                                                                       (routing.CHALLENGER, challenger)) if v}:
            return False
        failed: dict[str, Exception] = {}
        for version in dict.fromkeys(v for v in (champion, challenger) if v is not None):
            if version in self.loaded:
                continue
            try:
                self.loaded[version] = await asyncio.to_thread(load_version, self.model, self.source, version)
            except Exception as exc:
                self.metrics.load_errors.labels(name).inc()
                log.exception("model '%s': version %s failed to load or warm up", name, version)
                failed[version] = exc
        if champion in failed:
            exc = failed[champion]
            log.error("model '%s': champion %s cannot be served; keeping the current deployment", name, champion)
            if current is None:
                self.not_ready_reason = f"the champion could not be loaded: {type(exc).__name__}: {str(exc)[:300]}"
            return False
        if challenger in failed:
            # the champion (a promotion, a rollback) is served regardless; the A/B test gets no challenger traffic
            # until the version loads (retried every poll), which ab_analysis sees and says
            log.error("model '%s': challenger %s cannot be served; serving champion %s alone", name, challenger,
                      champion)
            challenger = None
            if current is not None and current.arms == {routing.CHAMPION: champion}:
                return False

        def scorer(arm: str, version: str, old: Scorer | None) -> Scorer:
            if old is not None and old.version == version:
                return old
            return Scorer(self.loaded[version], arm, max_batch_rows=self.policy.max_batch_rows,
                          max_wait_s=self.policy.max_wait_ms / 1000.0, on_batch=self._observe_batch)

        new = Deployment(
            champion=scorer(routing.CHAMPION, champion, current.champion if current else None),
            challenger=None if challenger is None else scorer(
                routing.CHALLENGER, challenger, current.challenger if current else None),
            mode=self.model.ab_test.mode,
            share=self.model.ab_test.challenger_share,
        )
        self.deployment = new  # the swap: one reference; requests that read the old one finish on it
        kept = {id(s) for s in new.scorers()}
        retired = [s for s in (current.scorers() if current else []) if id(s) not in kept]
        for s in retired:
            s.retire()
        self._retired = [s for s in self._retired if not s.closed] + retired
        in_use = {s.version for s in new.scorers()}
        self.loaded = {v: m for v, m in self.loaded.items() if v in in_use}
        self.metrics.served(new.arms)
        if current is not None:
            self.metrics.swaps.labels(name).inc()
        if self.freeze_gc:
            # Loading a version imports MLflow, skops and scikit-learn: about 500,000 objects that live as long as
            # the process. A full collection walks them all (about 260 ms, measured under wrk), and the request churn
            # triggers one every second or so, holding the GIL: every request in flight waits, and p99 is that
            # pause. Frozen objects are left out of every collection; reference counting still frees them.
            gc.freeze()
        log.info("model '%s': serving %s%s", name, ", ".join(f"{arm} version {v}" for arm, v in new.arms.items()),
                 f" ({new.mode} mode, experiment {new.experiment})" if new.challenger is not None else "")
        return True

    async def _refresh_drift(self) -> None:
        if self.store_factory is None:
            return
        try:
            self.metrics.drift = await asyncio.to_thread(self._read_drift)
        except Exception as exc:
            self.metrics.poll_errors.labels(self.model.name).inc()
            log.warning("model '%s': reading the drift records failed (%s)", self.model.name, exc)

    def _read_drift(self) -> Any:
        if self._store is None:
            self._store = self.store_factory()  # type: ignore[misc]
        start = clock.now() - DRIFT_LOOKBACK
        return drift_snapshot(self._store.list_records("drift", self.model.name, start=start))

    # --- scoring ------------------------------------------------------------------------------------------------

    def _observe_batch(self, scorer: Scorer, rows: int, seconds: float, outcomes: list[Scored | Exception]) -> None:
        labels = (self.model.name, scorer.version, scorer.arm)
        self.metrics.batch_rows.labels(*labels).observe(rows)
        self.metrics.batch_duration.labels(*labels).observe(seconds)
        hist = self.metrics.scores.labels(*labels)
        for outcome in outcomes:
            if isinstance(outcome, Scored):
                for s in outcome.scores:
                    hist.observe(s)

    def _pick(self, dep: Deployment, version: str | None, label: str | None) -> Scorer | None:
        """The scorer a version or label pins (None: route); RequestError 404 when it is not served."""
        if version is None and label is None:
            return None
        served = ", ".join(f"{v} ({arm})" for arm, v in dep.arms.items())
        if label is not None:
            scorer = {routing.CHAMPION: dep.champion, routing.CHALLENGER: dep.challenger}.get(label)
            if scorer is None:
                what = ("no challenger is set" if label == routing.CHALLENGER
                        else f"labels are {', '.join(routing.ARMS)}")
                raise RequestError(404, "not_found", f"label {label!r} of model '{self.model.name}' is not served "
                                                     f"({what}); serving: {served}")
            return scorer
        for scorer in dep.scorers():
            if scorer.version == version:
                return scorer
        raise RequestError(404, "not_found", f"version {version!r} of model '{self.model.name}' is not served; "
                                             f"serving: {served}")

    async def answer(self, rows: Rows, *, version: str | None = None, label: str | None = None,
                     batch: bool = False) -> Answer:
        """Score a request's rows: route (or pin), score per arm, log, count. Raises :class:`RequestError`."""
        ts = clock.now()
        dep = self.deployment
        if dep is None:
            raise RequestError(503, "not_ready", f"model '{self.model.name}' is not ready: {self.not_ready_reason}")
        pinned = self._pick(dep, version, label)
        n = len(rows.values)
        if pinned is not None:
            arms = [pinned.arm] * n
            routed_by = "version" if version is not None else "label"
        elif dep.challenger is not None and dep.mode == "split":
            routed_by = rows.routed_by
            keys = rows.entity_ids if routed_by == "entity_id" else rows.request_ids
            arms = routing.assign_all(keys, dep.experiment or "", dep.share)  # type: ignore[arg-type]
        else:
            arms = [routing.CHAMPION] * n
            routed_by = rows.routed_by if dep.challenger is not None else "champion_only"
        scorers = {routing.CHAMPION: dep.champion, routing.CHALLENGER: dep.challenger}
        if pinned is not None:
            scorers[pinned.arm] = pinned
        groups: dict[str, list[int]] = {}
        for i, arm in enumerate(arms):
            groups.setdefault(arm, []).append(i)
        parts = {arm: (rows.values if len(idx) == n else [rows.values[i] for i in idx]) for arm, idx in groups.items()}
        # From reading the deployment to here nothing awaits: the rows are queued on the versions read above.
        if batch:
            waits = {arm: asyncio.ensure_future(scorers[arm].score_now(part)) for arm, part in parts.items()}
        else:
            waits = {arm: scorers[arm].submit(part) for arm, part in parts.items()}  # type: ignore[union-attr]
        shadow = None
        if pinned is None and dep.challenger is not None and dep.mode == "shadow":
            if batch:
                shadow = asyncio.ensure_future(dep.challenger.score_now(rows.values))
                self._background.add(shadow)
                shadow.add_done_callback(self._background.discard)
            else:
                shadow = dep.challenger.submit(rows.values)
        outcomes = dict(zip(waits, await asyncio.gather(*waits.values())))
        problems: list[tuple[int, str]] = []
        for arm, outcome in outcomes.items():
            if isinstance(outcome, InvalidRows):
                problems += [(groups[arm][i], reason) for i, reason in outcome.problems]
        failed = [(arm, o) for arm, o in outcomes.items() if isinstance(o, ModelFailure)]
        if problems or failed:
            if shadow is not None:
                shadow.add_done_callback(_consume)
            if failed:
                for arm, _ in failed:
                    version = scorers[arm].version  # type: ignore[union-attr]
                    self.metrics.model_errors.labels(self.model.name, version, arm).inc()
                raise RequestError(500, "model_error", str(failed[0][1]))
            problems.sort()
            first = "; ".join(f"row {i}: {reason}" for i, reason in problems[:3])
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise RequestError(422, "invalid_features", f"{len(problems)} row(s) break the contract of model "
                                                        f"'{self.model.name}': {first}{more}", problems)
        versions = [""] * n
        scores: list[float] = [0.0] * n
        preds: list[Any] = [None] * n
        features: list[dict[str, Any]] = [{}] * n
        for arm, idx in groups.items():
            scored: Scored = outcomes[arm]  # type: ignore[assignment]
            v = scorers[arm].version  # type: ignore[union-attr]
            self.metrics.predictions.labels(self.model.name, v, arm).inc(len(idx))
            for k, i in enumerate(idx):
                versions[i], scores[i], preds[i], features[i] = v, scored.scores[k], scored.predictions[k], \
                    scored.features[k]
        records = [{"model": self.model.name, "request_id": rows.request_ids[i], "entity_id": rows.entity_ids[i],
                    "ts": ts, "model_version": versions[i], "arm": PINNED_ARM if pinned is not None else arms[i],
                    "prediction": preds[i],
                    "score": scores[i], "features": features[i]} for i in range(n)]
        logged = self.prediction_log.append(records)  # a refusal is counted and logged by the log itself
        if shadow is not None:
            shadow.add_done_callback(lambda f: self._log_shadow(f, rows, ts, dep))
        if not logged and self.policy.log_full == "refuse":
            raise RequestError(503, "log_full", "the prediction log is full (the store has been unreachable for "
                                                "long); retry later")
        return Answer(rows, versions, arms, scores, preds, routed_by, dep, logged)

    def _log_shadow(self, future: asyncio.Future, rows: Rows, ts: dt.datetime, dep: Deployment) -> None:
        challenger = dep.challenger
        assert challenger is not None
        if future.cancelled():
            return
        outcome = future.exception() or future.result()
        if not isinstance(outcome, Scored):
            self.metrics.model_errors.labels(self.model.name, challenger.version, routing.CHALLENGER).inc()
            log.warning("model '%s': the shadow challenger %s did not score a request the champion answered: %s",
                        self.model.name, challenger.version, outcome)
            return
        self.metrics.shadow_predictions.labels(self.model.name, challenger.version).inc(len(outcome.scores))
        self.prediction_log.append([
            {"model": self.model.name, "request_id": routing.shadow_request_id(rows.request_ids[i]),
             "entity_id": rows.entity_ids[i], "ts": ts, "model_version": challenger.version, "arm": routing.SHADOW,
             "prediction": outcome.predictions[i], "score": outcome.scores[i], "features": outcome.features[i]}
            for i in range(len(outcome.scores))])


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


# --- the app ---------------------------------------------------------------------------------------------------


def _json(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(doc, separators=(",", ":"), allow_nan=False), status_code=status,
                    media_type="application/json", headers=dict(headers or {}))


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, "too_large", f"request body is {int(declared)} bytes; the limit is {limit} bytes "
                                             "(serving.max_body_bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, "too_large", f"request body exceeds the limit of {limit} bytes "
                                                 "(serving.max_body_bytes)")
    try:
        return json.loads(body)
    except RecursionError:
        raise _bad("body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: their messages name a position, not the text
        raise _bad(f"body is not valid JSON: {exc}") from None


def create_app(
    model: ModelConfig,
    *,
    prediction_log: PredictionLogLike | None = None,
    source: ModelSource | None = None,
    store_factory: Callable[[], Store] | None = None,
    spool_dir: str | None = None,
    freeze_gc: bool = False,
) -> FastAPI:
    """The serving app of one model.

    ``source``: where versions come from (default: the MLflow registry through the ``mlflow_default`` Connection).
    ``store_factory``: opens the store the drift records are read from (default: the ``evergreen_store``
    Connection). ``prediction_log``: where every prediction goes (default: a
    :class:`evergreen.serve.predlog.PredictionLog` spooling under ``spool_dir`` and shipping to that store). The
    app owns the log it is given: it starts it at startup and closes it (draining the spool) at shutdown.
    ``freeze_gc``: after each deployment swap, move every object alive into the garbage collector's permanent
    generation (:func:`gc.freeze`), for a process that serves nothing else (``python -m evergreen.serve``).
    """
    if source is None:
        from evergreen.serve.models import MlflowModelSource

        source = MlflowModelSource(model.name)
    if store_factory is None:
        def store_factory() -> Store:
            from evergreen.hooks.store import StoreHook

            return StoreHook().get_conn()
    if prediction_log is None:
        if spool_dir is None:
            raise ValueError(f"model '{model.name}': no prediction log and no spool_dir; pass spool_dir (the local "
                             "folder the prediction log spools to) or a prediction_log")
        from evergreen.serve.predlog import PredictionLog

        prediction_log = PredictionLog(spool_dir, store_factory, {model.name: model.feature_names})
    metrics = ServingMetrics(model.name, prediction_log.stats)
    server = Server(model, source, prediction_log, store_factory, metrics, freeze_gc=freeze_gc)
    name = model.name
    policy = model.serving

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(title=f"Evergreen serving: {name}", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.server = server

    async def handle(endpoint: str, work: Callable[[], Any], errors: str = "full") -> Response:
        """Run one endpoint: time it, count it, and turn a RequestError into its JSON answer."""
        started = time.perf_counter()
        try:
            response = await work()
        except ClientDisconnect:  # the client went away mid-body: nobody reads this answer
            metrics.request_errors.labels(name, endpoint, "client_disconnect").inc()
            response = _json({"error": "the client disconnected before the body was read"}, 400)
        except RequestError as exc:
            metrics.request_errors.labels(name, endpoint, exc.reason).inc()
            doc: dict[str, Any] = {"error": exc.message}
            if errors == "full" and exc.problems:
                doc["problems"] = [{"row": i, "reason": r} for i, r in exc.problems]
            response = _json(doc, exc.status)
        except Exception:
            log.exception("model '%s': %s failed", name, endpoint)
            metrics.request_errors.labels(name, endpoint, "internal").inc()
            response = _json({"error": "internal error; the server log has the details"}, 500)
        metrics.requests.labels(name, endpoint, str(response.status_code)).inc()
        metrics.latency.labels(name, endpoint).observe(time.perf_counter() - started)
        return response

    def check_name(requested: str) -> None:
        if requested != name:
            raise RequestError(404, "not_found", f"model {requested[:100]!r} is not served here; this server serves "
                                                 f"'{name}'")

    def logged_header(answer: Answer) -> dict[str, str]:
        return {"X-Evergreen-Logged": "true" if answer.logged else "false"}

    # --- /predict, /batch_predict ---------------------------------------------------------------------------

    def parse_predict(doc: Any) -> Rows:
        if not isinstance(doc, dict):
            raise _bad(f"body: expected a JSON object with 'instances' or 'features', got {_kind(doc)}")
        allowed = {"instances", "features", "entity_ids", "request_ids", "request_id"}
        unknown = sorted(k for k in doc if k not in allowed)
        if unknown:
            raise _bad(f"body: unknown field {unknown[0]!r}; expected 'instances' (records with named features and "
                       "the entity id) or 'features' (rows in the config's feature order), optionally "
                       "'entity_ids', 'request_ids' or 'request_id'")
        if ("instances" in doc) == ("features" in doc):
            raise _bad("body: send exactly one of 'instances' (records with named features and the entity id) and "
                       "'features' (rows in the config's feature order)")
        if "instances" in doc:
            if "entity_ids" in doc or "request_ids" in doc:
                raise _bad("body: 'entity_ids' and 'request_ids' go with 'features' rows; records carry their ids")
            return server.parser.records(doc["instances"], "instances", doc.get("request_id"))
        return server.parser.rows(doc["features"], "features", entity_ids=doc.get("entity_ids"),
                                  request_ids=doc.get("request_ids"), top_request_id=doc.get("request_id"))

    def predict_doc(answer: Answer) -> dict[str, Any]:
        rows = answer.rows
        return {
            "model": name,
            "mode": answer.deployment.mode if answer.deployment.challenger is not None else "champion_only",
            "experiment": answer.deployment.experiment,
            "routed_by": answer.routed_by,
            "logged": answer.logged,
            "predictions": [{"request_id": rows.request_ids[i], "entity_id": rows.entity_ids[i],
                             "prediction": answer.predictions[i], "score": answer.scores[i],
                             "model_version": answer.versions[i], "arm": answer.arms[i]}
                            for i in range(len(rows.values))],
        }

    async def predict_endpoint(request: Request, endpoint: str, batch: bool) -> Response:
        async def work() -> Response:
            rows = parse_predict(await _read_json(request, policy.max_body_bytes))
            answer = await server.answer(rows, batch=batch)
            return _json(predict_doc(answer), headers=logged_header(answer))

        return await handle(endpoint, work)

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        return await predict_endpoint(request, "predict", batch=False)

    @app.post("/batch_predict")
    async def batch_predict(request: Request) -> Response:
        return await predict_endpoint(request, "batch_predict", batch=True)

    # --- TensorFlow Serving ---------------------------------------------------------------------------------

    def tf_spec(spec: str) -> tuple[str, str | None, str | None]:
        """``name[/versions/<v>|/labels/<l>]`` -> (name, version, label)."""
        parts = spec.split("/")
        if len(parts) == 1:
            return parts[0], None, None
        if len(parts) == 3 and parts[1] in ("versions", "labels") and parts[2]:
            return (parts[0], parts[2], None) if parts[1] == "versions" else (parts[0], None, parts[2])
        raise RequestError(404, "not_found", "unknown path; expected /v1/models/<name>[/versions/<version>|"
                                             "/labels/<label>][:predict]")

    @app.post("/v1/models/{spec:path}")
    async def tf_predict(spec: str, request: Request) -> Response:
        async def work() -> Response:
            path, _, method = spec.rpartition(":")
            if not path:
                raise RequestError(404, "not_found", "unknown path; expected /v1/models/<name>[/versions/<version>|"
                                                     "/labels/<label>]:predict")
            if method != "predict":
                raise RequestError(400, "bad_request", f"method ':{method[:40]}' is not served; this server answers "
                                                       ":predict (classification scores)")
            model_name, version, label = tf_spec(path)
            check_name(model_name)
            doc = await _read_json(request, policy.max_body_bytes)
            if not isinstance(doc, dict):
                raise _bad(f"body: expected a JSON object with 'instances' or 'inputs', got {_kind(doc)}")
            unknown = sorted(k for k in doc if k not in ("instances", "inputs", "signature_name"))
            if unknown:
                raise _bad(f"body: unknown field {unknown[0]!r}; expected 'instances' or 'inputs'")
            if ("instances" in doc) == ("inputs" in doc):
                raise _bad("body: send exactly one of 'instances' (row format) and 'inputs' (columnar format)")
            columnar = "inputs" in doc
            data = doc["inputs"] if columnar else doc["instances"]
            where = "inputs" if columnar else "instances"
            if isinstance(data, dict):
                if not columnar:
                    raise _bad("instances: expected a list of rows or records")
                rows = server.parser.columns(data, where)
            elif isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
                rows = server.parser.records(data, where)
            else:
                rows = server.parser.rows(data, where)
            answer = await server.answer(rows, version=version, label=label)
            n = len(rows.values)
            outputs = {"score": answer.scores, "prediction": answer.predictions, "model_version": answer.versions,
                       "arm": answer.arms, "request_id": rows.request_ids}
            if columnar:
                body: dict[str, Any] = {"outputs": outputs}
            else:
                body = {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(n)]}
            return _json(body, headers=logged_header(answer))

        return await handle("tfs_predict", work, errors="tf")

    @app.get("/v1/models/{spec:path}")
    async def tf_status(spec: str) -> Response:
        async def work() -> Response:
            model_name, version, label = tf_spec(spec)
            check_name(model_name)
            dep = server.deployment
            if dep is None:
                return _json({"model_version_status": [{"version": "", "state": "LOADING", "status": {
                    "error_code": "UNAVAILABLE", "error_message": server.not_ready_reason}}]})
            pinned = server._pick(dep, version, label)
            scorers = [pinned] if pinned is not None else dep.scorers()
            return _json({"model_version_status": [
                {"version": s.version, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
                for s in scorers]})

        return await handle("tfs_status", work, errors="tf")

    # --- Open Inference Protocol ----------------------------------------------------------------------------

    async def oip_infer(request: Request, model_name: str, version: str | None) -> Response:
        async def work() -> Response:
            check_name(model_name)
            doc = await _read_json(request, policy.max_body_bytes)
            if not isinstance(doc, dict):
                raise _bad(f"body: expected an inference request object, got {_kind(doc)}")
            rows = server.parser.oip(doc)
            answer = await server.answer(rows, version=version)
            n = len(rows.values)
            versions = sorted(set(answer.versions))
            out: dict[str, Any] = {"model_name": name, "id": str(doc["id"]) if doc.get("id") is not None
                                   else rows.request_ids[0] if n == 1 else uuid.uuid4().hex,
                                   "parameters": {"routed_by": answer.routed_by, "logged": answer.logged}}
            if len(versions) == 1:
                out["model_version"] = versions[0]
            out["outputs"] = [
                {"name": "score", "datatype": "FP64", "shape": [n], "data": answer.scores},
                {"name": "prediction", "datatype": "INT64", "shape": [n], "data": answer.predictions},
                {"name": "model_version", "datatype": "BYTES", "shape": [n], "data": answer.versions},
                {"name": "arm", "datatype": "BYTES", "shape": [n], "data": answer.arms},
                {"name": "request_id", "datatype": "BYTES", "shape": [n], "data": rows.request_ids},
            ]
            return _json(out, headers=logged_header(answer))

        return await handle("oip_infer", work, errors="oip")

    @app.post("/v2/models/{model_name}/infer")
    async def oip_infer_model(model_name: str, request: Request) -> Response:
        return await oip_infer(request, model_name, None)

    @app.post("/v2/models/{model_name}/versions/{version}/infer")
    async def oip_infer_version(model_name: str, version: str, request: Request) -> Response:
        return await oip_infer(request, model_name, version)

    def oip_metadata(model_name: str, version: str | None) -> Any:
        async def work() -> Response:
            check_name(model_name)
            dep = server.deployment
            if dep is None:
                raise RequestError(503, "not_ready", f"model '{name}' is not ready: {server.not_ready_reason}")
            if version is not None:
                server._pick(dep, version, None)
            inputs = [{"name": f.name, "datatype": OIP_TYPES[f.type], "shape": [-1]} for f in model.features]
            inputs.append({"name": model.entity_id, "datatype": "BYTES", "shape": [-1]})
            return _json({"name": name, "versions": [version] if version else [s.version for s in dep.scorers()],
                          "platform": "sklearn", "inputs": inputs,
                          "outputs": [{"name": "score", "datatype": "FP64", "shape": [-1]},
                                      {"name": "prediction", "datatype": "INT64", "shape": [-1]},
                                      {"name": "model_version", "datatype": "BYTES", "shape": [-1]},
                                      {"name": "arm", "datatype": "BYTES", "shape": [-1]},
                                      {"name": "request_id", "datatype": "BYTES", "shape": [-1]}]})

        return handle("oip_metadata", work, errors="oip")

    def oip_model_ready(model_name: str, version: str | None) -> Any:
        async def work() -> Response:
            check_name(model_name)
            dep = server.deployment
            ready = dep is not None and (version is None or version in dep.arms.values())
            return _json({"name": name, "ready": ready}, 200 if ready else 503)

        return handle("oip_ready", work, errors="oip")

    @app.get("/v2")
    async def oip_server() -> Response:
        return _json({"name": "evergreen", "version": "0.1.0", "extensions": []})

    @app.get("/v2/models/{model_name}")
    async def oip_model(model_name: str) -> Response:
        return await oip_metadata(model_name, None)

    @app.get("/v2/models/{model_name}/versions/{version}")
    async def oip_model_version(model_name: str, version: str) -> Response:
        return await oip_metadata(model_name, version)

    @app.get("/v2/models/{model_name}/ready")
    async def oip_ready(model_name: str) -> Response:
        return await oip_model_ready(model_name, None)

    @app.get("/v2/models/{model_name}/versions/{version}/ready")
    async def oip_version_ready(model_name: str, version: str) -> Response:
        return await oip_model_ready(model_name, version)

    @app.get("/v2/health/live")
    async def oip_live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def oip_health_ready() -> Response:
        ready = server.deployment is not None
        return _json({"ready": ready}, 200 if ready else 503)

    # --- health, readiness, metrics -------------------------------------------------------------------------

    @app.get("/health")
    async def health() -> Response:
        return _json({"status": "alive"})

    @app.get("/ready")
    async def ready() -> Response:
        dep = server.deployment
        if dep is None:
            return _json({"ready": False, "model": name, "reason": server.not_ready_reason}, 503)
        return _json({"ready": True, "model": name, "arms": dep.arms,
                      "mode": dep.mode if dep.challenger is not None else "champion_only",
                      "experiment": dep.experiment})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        body, content_type = await asyncio.to_thread(metrics.render)
        return Response(body, media_type=content_type)

    return app
