"""The models being served: where versions come from, one loaded version, and its micro-batching scorer.

* :class:`MlflowModelSource` reads the registry's aliases and loads a version through the platform's skops loader
  (:func:`evergreen.train.modelio.load_model`, never pickle), with the MLflow target built from the
  :class:`~evergreen.hooks.mlflow.MlflowHook` (its Connection, or the embedded MLflow in embedded mode).
* :class:`LoadedModel` is one version, warmed up before it may serve: it has predicted on a row built from the
  config's feature specs, so a version that loads but cannot score is never swapped in.
* :func:`score_rows` is one model call over many requests' rows: the rows are validated by the ingestion
  contract's rule (types, ranges, categories, nullability, the rule the lake's rows obey), the valid rows are scored
  in one ``predict_proba`` through the platform's positive-class rule (:func:`evergreen.train.evaluate.
  _positive_scores`), and each request gets its own rows' scores or its own rows' problems. A batch whose values are
  all plainly valid (:func:`plain_columns`: JSON numbers in range, bools, declared categories, allowed nulls -- what
  clients send) is parsed without pandas; any other batch goes through the contract's own per-feature check
  (:func:`evergreen.ingest.contract._check_feature`), which names each bad row. The rows are scored by the
  version's :class:`~evergreen.serve.compiled.Predictor`: ``pipeline.predict_proba``'s numbers without its per-call
  overhead (8 rows of the demo's 100-tree forest: about 10 ms in ``predict_proba``, 0.5 ms for all of
  :func:`score_rows`; ``bench/serving.py`` prints both). Validation runs here rather than per request on the event
  loop: a single-row request then costs the loop no validation work at all.
* :class:`Scorer` is the micro-batcher of one (arm, version): an asyncio queue drained by one task that takes up to
  ``max_batch_rows`` rows (waiting at most ``max_wait_ms`` for them) and runs :func:`score_rows` in a worker thread,
  so the event loop keeps accepting requests while the model works. A request is never split across batches; one
  larger than the batch bound is a batch of its own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from evergreen.config import FeatureSpec, ModelConfig
    from evergreen.serve.compiled import Predictor

log = logging.getLogger(__name__)


class ModelSource(Protocol):
    """Where the served versions come from (the MLflow registry; tests may use the same with another URI)."""

    def aliases(self) -> dict[str, str]:
        """The registered model's aliases (alias -> version)."""

    def load(self, version: str) -> Any:
        """The fitted pipeline of a version."""


class MlflowModelSource:
    """The registry through the platform's MLflow hook: aliases by :func:`evergreen.tracking.aliases`, versions by
    the skops loader."""

    def __init__(self, model_name: str, mlflow_conn_id: str = "mlflow_default") -> None:
        self.model_name = model_name
        self.mlflow_conn_id = mlflow_conn_id
        self._hook: Any = None

    @property
    def hook(self) -> Any:
        if self._hook is None:
            from evergreen.hooks.mlflow import MlflowHook

            self._hook = MlflowHook(mlflow_conn_id=self.mlflow_conn_id)
        return self._hook

    def aliases(self) -> dict[str, str]:
        from evergreen import tracking

        return tracking.aliases(self.hook.get_conn(), self.model_name)

    def load(self, version: str) -> Any:
        from evergreen.train.modelio import load_model
        from evergreen.train.register import MlflowTarget

        hook = self.hook
        hook.get_conn()  # registers the Connection's credentials for the artifact download (see the hook)
        target = MlflowTarget(hook.tracking_uri, hook.registry_uri, hook.artifact_location or "")
        return load_model(f"models:/{self.model_name}/{version}", target)


class InvalidRows(ValueError):
    """Rows of a request break the model's contract; ``problems`` is ``[(row index in the request, reason)]``."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"row {i}: {reason}" for i, reason in problems[:5]))


class ModelFailure(RuntimeError):
    """The model raised while scoring valid rows (a 5xx, counted)."""


@dataclass(frozen=True)
class Scored:
    """One request's rows scored by one version: positive-class score, predicted class, the features as logged."""

    scores: list[float]
    predictions: list[Any]
    features: list[dict[str, Any]]


@dataclass(frozen=True)
class LoadedModel:
    """One version: its fitted pipeline, and the predictor that serves it (:mod:`evergreen.serve.compiled`: the
    pipeline's own ``predict_proba``, bit for bit, without its per-call overhead when the pipeline is of a shape it
    knows)."""

    model: ModelConfig
    version: str
    pipeline: Any
    loaded_at: float = field(default_factory=time.time)
    predictor: Predictor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from evergreen.serve.compiled import compile_pipeline

        object.__setattr__(self, "predictor", compile_pipeline(self.model, self.pipeline))


def warmup_row(model: ModelConfig) -> list[Any]:
    """One valid row from the feature specs alone (a value inside each range, the first category, False)."""

    def value(spec: FeatureSpec) -> Any:
        if spec.type == "category":
            return (spec.categories or ("",))[0]
        if spec.type == "bool":
            return False
        low = spec.min if spec.min is not None else 0.0
        low = min(max(low, 0.0), spec.max) if spec.max is not None else max(low, 0.0)
        return int(math.ceil(low)) if spec.type == "int" else float(low)

    return [value(spec) for spec in model.features]


def load_version(model: ModelConfig, source: ModelSource, version: str) -> LoadedModel:
    """Load a version and score the warm-up row with it; raises when either fails (the caller keeps what it has)."""
    loaded = LoadedModel(model, str(version), source.load(str(version)))
    outcome = score_rows(loaded, [[warmup_row(model)]])[0]
    if isinstance(outcome, Exception):
        raise outcome
    return loaded


def _logged_values(spec: FeatureSpec, values: Any) -> list[Any]:
    """A parsed feature column as JSON-friendly values for the prediction log (None for a missing value)."""
    out = values.tolist()
    if spec.type in ("int", "float"):
        cast = int if spec.type == "int" else float
        return [None if v is None or v != v else cast(v) for v in out]
    if spec.type == "bool":
        return [None if v is None else bool(v) for v in out]
    return [None if v is None else str(v) for v in out]


#: the ints a float64 holds exactly: a larger one is parsed by the contract itself
_EXACT_INT = float(2**53)
_NUMBER_TYPES = (frozenset({int, float}), frozenset({int, float, type(None)}))
_BOOL_TYPES = (frozenset({bool}), frozenset({bool, type(None)}))
_TEXT_TYPES = (frozenset({str}), frozenset({str, type(None)}))


def plain_columns(model: ModelConfig, rows: Sequence[Sequence[Any]]) -> dict[str, Any] | None:
    """The rows' features parsed as the ingestion contract parses them, when every value is plainly valid: a number
    (not a bool) inside the feature's range (whole, for an int, and at most 2**53), a bool, a declared category, or
    None / NaN where the feature is nullable. None when any value is anything else: then the contract's own check
    (:func:`evergreen.ingest.contract._check_feature`) parses and judges the batch, as it does every unusual value
    (text numbers, "yes", out-of-range values). A value accepted here is one that check accepts, parsed to the
    same value (float64 for numbers, the object itself otherwise); ``test_models`` holds the two to that."""
    import numpy as np

    width = len(model.features)
    if not rows or any(len(row) != width for row in rows):
        return None
    columns: dict[str, Any] = {}
    for j, spec in enumerate(model.features):
        values = [row[j] for row in rows]
        kinds = set(map(type, values))
        nullable = int(bool(spec.nullable))
        if spec.type in ("int", "float"):
            if not kinds <= _NUMBER_TYPES[nullable]:
                return None
            if type(None) in kinds:
                values = [math.nan if v is None else v for v in values]
            try:
                parsed = np.array(values, dtype=np.float64)
            except (OverflowError, TypeError, ValueError):
                return None
            finite = np.isfinite(parsed)
            if not finite.all():  # NaN is null (valid where nullable, as None is); an infinity never is
                if not nullable or np.isinf(parsed).any():
                    return None
                parsed_ok = parsed[finite]
            else:
                parsed_ok = parsed
            if (np.abs(parsed_ok) > _EXACT_INT).any() or (spec.type == "int"
                                                          and (np.floor(parsed_ok) != parsed_ok).any()):
                return None
            if (spec.min is not None and (parsed_ok < spec.min).any()) or (
                    spec.max is not None and (parsed_ok > spec.max).any()):
                return None
            columns[spec.name] = parsed
        elif spec.type == "bool":
            if not kinds <= _BOOL_TYPES[nullable]:
                return None
            columns[spec.name] = np.array(values, dtype=object)
        else:
            categories = frozenset(spec.categories or ())
            if not kinds <= _TEXT_TYPES[nullable] or not all(v is None or v in categories for v in values):
                return None
            columns[spec.name] = np.array(values, dtype=object)
    return columns


def _contract_columns(model: ModelConfig, jobs: Sequence[Sequence[Sequence[Any]]],
                      rows: list[Sequence[Any]]) -> tuple[list[Scored | Exception | None], dict[str, Any]]:
    """The contract's check of a batch: each request's problems, and the valid requests' parsed columns."""
    import numpy as np
    import pandas as pd

    from evergreen.ingest.contract import _check_feature, _Problems

    starts = np.cumsum([0, *(len(job) for job in jobs)])
    frame = pd.DataFrame(rows, columns=model.feature_names)
    problems = _Problems()
    parsed = {spec.name: _check_feature(spec, frame[spec.name], problems) for spec in model.features}
    merged = problems.merged()
    bad_rows: dict[int, list[tuple[int, str]]] = {}
    for pos, reason in zip(merged["_pos"].tolist(), merged["reason"].tolist()):
        j = int(np.searchsorted(starts, pos, side="right")) - 1
        bad_rows.setdefault(j, []).append((int(pos - starts[j]), reason))
    outcomes: list[Scored | Exception | None] = [InvalidRows(bad_rows[j]) if j in bad_rows else None
                                                 for j in range(len(jobs))]
    keep = np.concatenate([np.arange(starts[j], starts[j + 1]) for j in range(len(jobs)) if outcomes[j] is None]
                          or [np.zeros(0, dtype="int64")]).astype("int64")
    return outcomes, {name: values.iloc[keep].to_numpy() for name, values in parsed.items()}


def score_rows(loaded: LoadedModel, jobs: Sequence[Sequence[Sequence[Any]]]) -> list[Scored | Exception]:
    """Validate and score the rows of several requests in one model call; one outcome per request, in order:
    :class:`Scored`, :class:`InvalidRows` (that request's rows broke the contract: nothing of it is scored), or
    :class:`ModelFailure` (the model raised: every valid request of the call gets it)."""
    import numpy as np

    from evergreen.serve.compiled import frame
    from evergreen.train.evaluate import _positive_scores

    model = loaded.model
    rows = [row for job in jobs for row in job]
    X = plain_columns(model, rows)
    if X is not None:
        outcomes: list[Scored | Exception | None] = [None] * len(jobs)
    else:
        outcomes, X = _contract_columns(model, jobs, rows)
    n_valid = len(X[model.feature_names[0]]) if model.features else 0
    if not n_valid:
        return outcomes  # type: ignore[return-value]
    try:
        if hasattr(loaded.pipeline, "predict_proba"):
            score, pred = _positive_scores(model, loaded.predictor, X)
        else:
            score, pred = _positive_scores(model, loaded.pipeline, frame(model, X))
    except Exception as exc:  # anything the model raises is the model's failure, never the client's
        log.exception("model '%s' version %s failed on %d rows", model.name, loaded.version, n_valid)
        failure = ModelFailure(f"model '{model.name}' version {loaded.version} failed: {type(exc).__name__}: "
                               f"{str(exc)[:300]}")
        return [o if o is not None else failure for o in outcomes]
    scores = np.asarray(score, dtype="float64").tolist()
    preds = [p.item() if hasattr(p, "item") else p for p in np.asarray(pred).tolist()]
    columns = {spec.name: _logged_values(spec, X[spec.name]) for spec in model.features}
    names = model.feature_names
    at = 0
    for j in range(len(jobs)):
        if outcomes[j] is not None:
            continue
        n = len(jobs[j])
        features = [{name: columns[name][i] for name in names} for i in range(at, at + n)]
        outcomes[j] = Scored(scores[at:at + n], preds[at:at + n], features)
        at += n
    return outcomes  # type: ignore[return-value]


@dataclass
class _Job:
    rows: Sequence[Sequence[Any]]
    future: asyncio.Future
    queued_at: float = 0.0  # loop time: a batch waits for more rows until its first row has waited max_wait


_STOP = object()


class Scorer:
    """The micro-batcher of one arm's version: :meth:`submit` queues a request's rows and returns a future of its
    :class:`Scored` outcome; one task batches the queue and scores each batch in a worker thread."""

    def __init__(self, loaded: LoadedModel, arm: str, *, max_batch_rows: int, max_wait_s: float,
                 on_batch: Callable[[Scorer, int, float, list[Scored | Exception]], None] | None = None) -> None:
        self.loaded = loaded
        self.arm = arm
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self.queued_rows = 0
        self._queue: asyncio.Queue = asyncio.Queue()
        self._carry: _Job | None = None
        self._late: set[asyncio.Task] = set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"scorer-{arm}-{loaded.version}")

    @property
    def version(self) -> str:
        return self.loaded.version

    def submit(self, rows: Sequence[Sequence[Any]]) -> asyncio.Future:
        """Queue rows (synchronously: a caller that read the deployment and submits without awaiting in between is
        always served by the version it read, even while a swap retires this scorer)."""
        loop = asyncio.get_running_loop()
        job = _Job(rows, loop.create_future(), loop.time())
        if self.closed:  # retired and drained: a late caller is still served by the version it read
            self._late.add(loop.create_task(self._score_one(job)))
            self._late.difference_update([t for t in self._late if t.done()])
            return job.future
        self.queued_rows += len(rows)
        self._queue.put_nowait(job)
        return job.future

    async def score_now(self, rows: Sequence[Sequence[Any]]) -> Scored | Exception:
        """Score one request as its own model call, bypassing the queue (``/batch_predict``)."""
        return (await self._score([_Job(rows, asyncio.get_running_loop().create_future())]))[0]

    async def _score_one(self, job: _Job) -> None:
        outcome = (await self._score([job]))[0]
        if not job.future.done():
            job.future.set_result(outcome)

    @property
    def closed(self) -> bool:
        """Retired and drained (a late :meth:`submit` is still served, as its own model call)."""
        return self._task.done()

    def retire(self) -> None:
        """Stop after the rows already queued are scored (a swap retired this version)."""
        self._queue.put_nowait(_STOP)

    async def wait_closed(self) -> None:
        await self._task
        if self._late:
            await asyncio.gather(*self._late, return_exceptions=True)

    async def _score(self, jobs: list[_Job]) -> list[Scored | Exception]:
        try:
            return await asyncio.to_thread(self._score_in_thread, [job.rows for job in jobs])
        except Exception as exc:  # a bug in the batch path must fail its requests, not hang them
            log.exception("scoring a batch of model '%s' version %s failed", self.loaded.model.name, self.version)
            return [ModelFailure(f"scoring failed: {type(exc).__name__}")] * len(jobs)

    def _score_in_thread(self, jobs: list[Sequence[Sequence[Any]]]) -> list[Scored | Exception]:
        started = time.perf_counter()
        outcomes = score_rows(self.loaded, jobs)
        if self.on_batch is not None:  # here, off the event loop: a large batch's per-row observations cost it nothing
            try:
                self.on_batch(self, sum(len(rows) for rows in jobs), time.perf_counter() - started, outcomes)
            except Exception:  # metrics must never cost an answer
                log.exception("batch metrics failed")
        return outcomes

    async def _next(self, timeout: float | None) -> Any:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        if timeout is None:
            return await self._queue.get()
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout <= 0:
                return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._next(None)
            if first is _STOP:
                break
            jobs, rows = [first], len(first.rows)
            # Under load the first row has waited while the model scored the previous batch: take what is queued
            # and go. Only a batch whose first row arrived on an idle scorer waits (at most max_wait) for company.
            deadline = first.queued_at + self.max_wait_s
            while rows < self.max_batch_rows:
                job = await self._next(deadline - loop.time())
                if job is None:
                    break
                if job is _STOP:
                    stopping = True
                    break
                if rows + len(job.rows) > self.max_batch_rows:
                    self._carry = job
                    break
                jobs.append(job)
                rows += len(job.rows)
            self.queued_rows -= rows
            outcomes = await self._score(jobs)
            for job, outcome in zip(jobs, outcomes):
                if not job.future.done():
                    job.future.set_result(outcome)
