"""The promotion gate by simulation: how often it promotes a truly worse model and a truly better one, against the
rules a user would pick instead, on the same pairs; and its wall time on a 1e5-row holdout.

**Holdout sizes** (``--rows``): 5,000 (about a week of the demo's 1,000 scored rows a day, the holdout a
production model would keep), 1,000 (the demo's one-day holdout) and 500 (``GatePolicy.min_holdout_rows``, the
smallest holdout the gate judges).

**Pairs.** Each pair is one holdout of ``N`` rows scored by a champion and a candidate whose *true* ROC AUCs are
known: the binormal model -- label ``y ~ Bernoulli(prevalence)``, score ``s = mu * y + e`` with unit-variance normal
noise, so the true AUC is ``Phi(mu / sqrt(2))`` exactly -- and the two models' noise correlated ``--rho`` on the same
rows, as a retrained model's errors are correlated with its predecessor's. The prevalence is the churn simulator's
(:mod:`evergreen_demo.simulate`, mean true probability on 200,000 rows); the champion's true AUC is ``--auc``.
Cases (true gain = candidate - champion AUC):

* ``worse`` -- worse by more than the margin (``-1.5 * margin``);
* ``boundary`` -- worse by exactly the margin, the least favourable truly-not-non-inferior case (where the
  non-inferiority test's error is largest);
* ``equal`` -- no difference;
* ``better`` -- better by the minimum detectable effect: the gain that the gate's superiority test (low end of the
  paired DeLong interval above ``superiority_margin``) detects with 80% power at this ``N`` and ``--rho``, from
  DeLong's standard error on a 200,000-row sample (``--mde`` sets it by hand).

**Rules**, all on the same pairs:

* ``evergreen`` -- :func:`evergreen.promote.gate.decide` with the churn model's ``gate:`` policy (the defaults:
  non-inferiority, margin 0.01, A/B test when not superior, confidence 0.95) without its slice checks (the pairs
  have no features), infra checks passed, disjoint windows;
  counted twice: "promoted directly" (outcome ``promote``) and "promoted or sent to an A/B test" (``ab_test`` is not a
  promotion -- live traffic decides next -- but it is how far the holdout alone lets a candidate go);
* ``mlflow`` -- ``mlflow.validate_evaluation_results`` with ``MetricThreshold(min_absolute_change=c,
  greater_is_better=True)``, called for real on the two point AUCs: passes when ``candidate >= champion + c``; ``c``
  must be > 0 (MLflow refuses 0), so "any gain" is ``c = 1e-10``, and ``c = margin``;
* ``tfx`` -- TFMA's ``GenericChangeThreshold(direction=HIGHER_IS_BETTER, absolute={'value': v})``: blessed when
  ``candidate - champion >= v`` on the point estimates (``metrics_validator._check_threshold``; TFMA is not
  installed here, so the rule is applied as written there): ``v = -1e-10`` (TFX's template, "no worse") and
  ``v = -margin``.

Goals: share promoted when truly worse by the margin or more <= alpha = 1 - confidence; share promoted at the MDE
>= 80%. Each share carries its simulation standard error ``sqrt(p (1 - p) / pairs)`` (and a Wilson 95% interval).

**Wall time**: two 100-tree RandomForests (the churn ``training:`` config, via ``build_pipeline``) trained on
simulated churn rows (not timed), saved with ``save_model_file``; timed: ``load_model_file`` of both, the infra
latency sample, scoring ``--timing-rows`` holdout rows with both, and ``decide`` (paired DeLong).

**Holdout against live traffic** (``--section holdout`` runs only this): is the holdout metric a model is
registered with what it then scores on the days after its window? For ``--windows`` disjoint calendar windows of
``--window-days`` lake days (the churn ``retrain.training_window_days``) of ``--day-rows`` simulated rows a day (the
demo's 1,000), written to a temporary lake as ``ingest_feedback`` lays it out, the churn ``training:`` estimator is
trained two ways and its holdout ROC AUC compared with its ROC AUC on the following ``--live-days`` days:

* *before* -- the old rule, :func:`old_request_hash_holdout` (``data.holdout_mask`` until issue 9): a hash of the
  request id holds out 20% of the rows of *every* day of the window (``training.holdout_fraction: 0.2``), and the
  model trains on the other 80% of the same days -- an in-time holdout;
* *after* -- the platform's out-of-time split, :func:`evergreen.train.data.prepare`: the window's last
  ``training.holdout_days`` lake days are the holdout and the model trains on the days before them, for each of
  ``--holdout-days`` (default: the churn config's 1 and a production week, 7).

Training is :func:`evergreen.train.spec.train`, each metric :func:`evergreen.train.evaluate.evaluate` (on the holdout,
and on the live days read back with :func:`evergreen.train.data.load_window`). The gap is holdout - live, summarised
across windows (mean, SD, min, max) and paired by window (in-time gap - out-of-time gap: how much less optimistic the
out-of-time holdout is). The simulator has no time trend (``simulate_day`` draws every day from one distribution
unless ``drift``/``concept_shift`` are passed), and on stationary days both holdouts are unbiased for later days, so
two scenarios run on the same daily draws: *stationary* (the control) and *gradual drift*, where day ``i`` of a window
(``i = 0`` on its first prediction day, continuing through its live days) is simulated with
``drift = --drift-per-day * i`` and ``concept_shift = --concept-shift-per-day * i``. The default concept shift is
negative because a positive one strengthens the churn truth's category effects, so the live AUC would rise with time
instead of decaying as a production model's does.

    python bench/gate.py [--section all|gate|holdout]
                         [--pairs 1000] [--rows 5000,1000,500] [--rho 0.9] [--auc 0.80] [--mde AUTO]
                         [--prevalence SIMULATOR] [--timing-rows 100000] [--train-rows 20000] [--seed 20261101]
                         [--windows 8] [--window-days CONFIG] [--holdout-days CONFIG,7] [--live-days 7]
                         [--day-rows 1000] [--drift-per-day 0.05] [--concept-shift-per-day -0.02]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import math
import tempfile
import time
from pathlib import Path

GOAL_POWER = 0.80
MDE_SAMPLE = 200_000
CANDIDATE = dict(version="2", window_tag="2026-10-08/2026-11-07", holdout_days=7)  # holdout [10-31, 11-07)
CHAMPION = dict(version="1", window_tag="2026-10-01/2026-10-31", holdout_days=7)  # trained [10-01, 10-24)
OLD_HOLDOUT_FRACTION = 0.2  # the churn config's training.holdout_fraction before issue 9
FIRST_WINDOW_DAY = dt.date(2025, 1, 1)  # first prediction day of the first holdout-vs-live window
PRODUCTION_HOLDOUT_DAYS = 7  # "a production model would hold out about a week" (include/config/churn.yaml)


def churn():
    """The churn model and its typed gate policy without slice checks: the binormal pairs have no features to slice
    by (with ``gate.slices`` set, every pair would be rejected for "no slice results"), and the timing section times
    the overall comparison as before."""
    from evergreen.config import get_config

    model = get_config().model("churn")
    return model, dataclasses.replace(model.gate, slices=())


def mu_for(auc: float) -> float:
    from scipy.stats import norm

    return math.sqrt(2.0) * float(norm.ppf(auc))


def pair(rng, n: int, prevalence: float, auc_a: float, auc_b: float, rho: float):
    """``(y, champion score, candidate score)`` from the binormal model with noise correlation ``rho``."""
    import numpy as np

    y = (rng.random(n) < prevalence).astype("int64")
    z1, z2 = rng.standard_normal(n), rng.standard_normal(n)
    e_b = rho * z1 + math.sqrt(1.0 - rho * rho) * z2
    return y, mu_for(auc_a) * y + z1, mu_for(auc_b) * y + e_b


def delong_se(rng, n: int, prevalence: float, auc_a: float, auc_b: float, rho: float) -> float:
    """The paired DeLong standard error of the AUC gain expected at ``n`` rows (variance ~ 1/n)."""
    from evergreen import stats

    y, a, b = pair(rng, MDE_SAMPLE, prevalence, auc_a, auc_b, rho)
    return stats.auc_delong_paired(y, a, b).difference.se * math.sqrt(MDE_SAMPLE / n)


def mde_for(rng, n, prevalence, auc, rho, policy) -> tuple[float, float]:
    """``(mde, se)``: the gain the superiority test finds with 80% power (two passes: the SE depends on the gain)."""
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - policy.confidence) / 2)) + float(norm.ppf(GOAL_POWER))
    mde = 0.0
    for _ in range(2):
        se = delong_se(rng, n, prevalence, auc, auc + mde, rho)
        mde = policy.superiority_margin + z * se
    return mde, se


class Peers:
    """The peer rules on point estimates; MLflow's is its real ``validate_evaluation_results``."""

    def __init__(self, margin: float):
        import mlflow
        from mlflow.exceptions import MlflowException
        from mlflow.models import MetricThreshold
        from mlflow.models.evaluation import EvaluationResult

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # it logs "Validating ..." at INFO on every call
        self._mlflow, self._error, self._result = mlflow, MlflowException, EvaluationResult
        self.mlflow = {f"mlflow min_absolute_change={c:g}": {"roc_auc": MetricThreshold(
            min_absolute_change=c, greater_is_better=True)} for c in (1e-10, margin)}
        self.tfx = {f"tfx change absolute={v:g}": v for v in (-1e-10, -margin)}

    def names(self) -> list[str]:
        return [*self.mlflow, *self.tfx]

    def passed(self, champion_auc: float, candidate_auc: float) -> dict[str, bool]:
        out = {}
        for name, thresholds in self.mlflow.items():
            try:
                self._mlflow.validate_evaluation_results(thresholds, self._result({"roc_auc": candidate_auc}, {}),
                                                         self._result({"roc_auc": champion_auc}, {}))
                out[name] = True
            except self._error:
                out[name] = False
        for name, v in self.tfx.items():
            out[name] = candidate_auc - champion_auc >= v  # TFMA: diff >= absolute for HIGHER_IS_BETTER
        return out


def facts(y, champion_score, candidate_score, candidate_metric: float, infra):
    from evergreen.promote.gate import Comparison, GateFacts, VersionFacts

    return GateFacts(model="churn", metric="roc_auc",
                     candidate=VersionFacts(**CANDIDATE, metrics={"roc_auc": candidate_metric}),
                     champion=VersionFacts(**CHAMPION), infra=infra,
                     comparison=Comparison(y=y, champion_score=champion_score, candidate_score=candidate_score))


def run_case(rng, n, pairs, prevalence, auc, gain, rho, policy, peers, infra) -> dict[str, int]:
    from evergreen import stats
    from evergreen.promote.gate import AB_TEST, PROMOTE, decide

    counts = dict.fromkeys(["evergreen: promoted directly", "evergreen: promoted or A/B", *peers.names()], 0)
    outcomes: dict[str, int] = {}
    for _ in range(pairs):
        y, a, b = pair(rng, n, prevalence, auc, auc + gain, rho)
        auc_a, auc_b = stats.metric_value("roc_auc", y, a), stats.metric_value("roc_auc", y, b)
        report = decide(policy, facts(y, a, b, auc_b, infra))
        outcomes[report.outcome] = outcomes.get(report.outcome, 0) + 1
        counts["evergreen: promoted directly"] += report.outcome == PROMOTE
        counts["evergreen: promoted or A/B"] += report.outcome in (PROMOTE, AB_TEST)
        for name, ok in peers.passed(auc_a, auc_b).items():
            counts[name] += ok
    counts["_outcomes"] = outcomes
    return counts


def share(k: int, pairs: int) -> str:
    from evergreen import stats

    p = k / pairs
    ci = stats.proportion_interval(k, pairs)
    return f"{p:6.1%} ±{math.sqrt(p * (1 - p) / pairs):5.1%} [{ci.low:5.1%},{ci.high:6.1%}]"


def goals(worst: int, power: int, pairs: int, alpha: float) -> str:
    """``met`` on the point estimates; ``met within simulation error`` when a miss is inside the 95% interval (at the
    MDE the power is 80% by construction, so half of all runs would land just below it)."""
    from evergreen import stats

    if worst / pairs <= alpha and power / pairs >= GOAL_POWER:
        return "met"
    low, high = stats.proportion_interval(worst, pairs).low, stats.proportion_interval(power, pairs).high
    if low <= alpha and high >= GOAL_POWER:
        return "met within simulation error"
    return "NOT met"


def simulate(args, model, policy) -> list[str]:
    import numpy as np

    from evergreen.promote.gate import InfraFacts
    from evergreen_demo import simulate as sim

    rng = np.random.default_rng(args.seed)
    prevalence = args.prevalence or float(
        sim.true_probability(model, sim.feature_frame(model, MDE_SAMPLE, "gate-bench")).mean())
    alpha = 1 - policy.confidence
    infra = InfraFacts(loaded=True, signature_ok=True, scored_rows=policy.latency_sample_rows, latency_ms=1.0)
    peers = Peers(policy.margin)
    spread = mu_for(args.auc) ** 2 * prevalence * (1 - prevalence)  # the label's share of a score's variance
    print(f"pairs: binormal scores, prevalence {prevalence:.3f} ({'--prevalence' if args.prevalence else 'simulator'}"
          f"), champion true AUC {args.auc}, noise correlation rho={args.rho} (score correlation "
          f"~{(spread + args.rho) / (spread + 1):.3f} at equal AUCs); {args.pairs} pairs per case, seed {args.seed}")
    print(f"policy: mode {policy.mode}, margin {policy.margin:g}, superiority_margin {policy.superiority_margin:g}, "
          f"ab_test_when {policy.ab_test_when}, confidence {policy.confidence:g} (alpha {alpha:.2g}), "
          f"min_holdout_rows {policy.min_holdout_rows}; slice checks off (config gate.slices: "
          f"{', '.join(model.gate.slices) or 'none'}; the pairs have no features)")
    print("shares: promoted ± simulation SE [Wilson 95%]\n")
    failing = []
    for n in args.rows:
        mde, se = (args.mde, delong_se(rng, n, prevalence, args.auc, args.auc + args.mde, args.rho)) if args.mde \
            else mde_for(rng, n, prevalence, args.auc, args.rho, policy)
        cases = [("worse", -1.5 * policy.margin), ("boundary", -policy.margin), ("equal", 0.0), ("better", mde)]
        results = {}
        for case, gain in cases:
            results[case] = run_case(rng, n, args.pairs, prevalence, args.auc, gain, args.rho, policy, peers, infra)
        seen = sorted({k for r in results.values() for k in r["_outcomes"]})
        print(f"holdout {n:,} rows: paired DeLong SE of the gain ~{se:.4f}; MDE {mde:+.4f} "
              f"({'set by --mde' if args.mde else '80% power of the superiority test'}); true gains: "
              + ", ".join(f"{c} {g:+.4f}" for c, g in cases))
        head = f"  {'rule':34s}" + "".join(f"{f'{c} ({g:+.3f})':>31s}" for c, g in cases)
        print(head)
        for rule in [k for k in results["worse"] if k != "_outcomes"]:
            row = "".join(f"{share(results[c][rule], args.pairs):>31s}" for c, _ in cases)
            verdict = goals(max(results[c][rule] for c in ("worse", "boundary")), results["better"][rule],
                            args.pairs, alpha)
            print(f"  {rule:34s}{row}   goals {verdict}")
            if rule.startswith("evergreen") and verdict == "NOT met":
                failing.append(f"{rule} @ {n:,} rows")
        print(f"  {'goal':34s}{f'<= {alpha:.0%}':>31s}{f'<= {alpha:.0%}':>31s}{'':>31s}{f'>= {GOAL_POWER:.0%}':>31s}")
        print("  gate outcomes per case: " + "; ".join(
            f"{c}: " + ", ".join(f"{o} {results[c]['_outcomes'].get(o, 0)}" for o in seen) for c, _ in cases) + "\n")
    return failing


def timing(args, model, policy) -> float:
    import numpy as np
    import pandas as pd

    from evergreen.promote.gate import InfraFacts, decide
    from evergreen.train import modelio, spec
    from evergreen_demo import simulate as sim

    def frame(n, seed):
        x = sim.feature_frame(model, n, seed)
        rng = np.random.default_rng(seed)
        return x, (rng.random(n) < sim.true_probability(model, x)).astype("int64")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, name in enumerate(("champion", "candidate")):
            x, y = frame(args.train_rows, args.seed + 1 + i)
            pipeline = spec.build_pipeline(model)
            pipeline.fit(x[model.feature_names], y)
            paths.append(Path(tmp) / f"{name}.skops")
            modelio.save_model_file(pipeline, paths[-1])
        x_hold, y_hold = frame(args.timing_rows, args.seed + 3)
        x_hold = pd.DataFrame(x_hold[model.feature_names])
        trained = time.perf_counter() - started
        size = sum(p.stat().st_size for p in paths) / 2 / 1e6

        t0 = time.perf_counter()
        champion, candidate = (modelio.load_model_file(p) for p in paths)
        t_load = time.perf_counter()
        sample = x_hold.iloc[:policy.latency_sample_rows]
        s0 = time.perf_counter()
        candidate.predict_proba(sample)
        latency_ms = (time.perf_counter() - s0) * 1000
        t_latency = time.perf_counter()
        champion_score = champion.predict_proba(x_hold)[:, 1]
        candidate_score = candidate.predict_proba(x_hold)[:, 1]
        t_score = time.perf_counter()
        from evergreen import stats

        infra = InfraFacts(loaded=True, signature_ok=True, scored_rows=len(sample), latency_ms=latency_ms)
        report = decide(policy, facts(y_hold, champion_score, candidate_score,
                                      stats.metric_value("roc_auc", y_hold, candidate_score), infra))
        t_end = time.perf_counter()
    total = t_end - t0
    r = float(np.corrcoef(champion_score, candidate_score)[0, 1])
    print(f"wall time, holdout of {args.timing_rows:,} rows, two {model.training.hyperparameters.get('n_estimators')}"
          f"-tree forests ({size:.1f} MB skops each; trained on {args.train_rows:,} rows each in {trained:.0f} s, "
          f"not timed):")
    print(f"  load both {t_load - t0:6.2f} s   latency sample {t_latency - t_load:6.2f} s   score both "
          f"{t_score - t_latency:6.2f} s   decide (paired DeLong) {t_end - t_score:6.2f} s   total {total:6.2f} s "
          f"(goal < 30 s: {'met' if total < 30 else 'NOT met'})")
    print(f"  outcome {report.outcome}: {report.reason}; the two forests' scores correlate r={r:.3f}")
    return total


def old_request_hash_holdout(request_ids, fraction: float = OLD_HOLDOUT_FRACTION):
    """The old rule (``evergreen.train.data.holdout_mask`` before issue 9), kept here only to measure it: True for the
    holdout rows, a fixed hash of the request id, so ``fraction`` of every day's rows are held out and the model
    trains on the rest of the same days."""
    import pandas as pd

    buckets = pd.util.hash_pandas_object(request_ids.astype(str), index=False).to_numpy() % 1_000_000
    return buckets < round(fraction * 1_000_000)


@dataclasses.dataclass(frozen=True)
class Spread:
    """A sample's mean, SD, standard error of the mean, min and max."""

    mean: float
    sd: float
    se: float
    low: float
    high: float

    @classmethod
    def of(cls, values) -> Spread:
        import numpy as np

        x = np.asarray(values, dtype="float64")
        sd = float(x.std(ddof=1)) if len(x) > 1 else float("nan")
        return cls(float(x.mean()), sd, sd / math.sqrt(len(x)), float(x.min()), float(x.max()))

    def __str__(self) -> str:
        return f"{self.mean:+.4f} ± {self.sd:.4f} (SE {self.se:.4f}) [{self.low:+.4f}, {self.high:+.4f}]"


def write_days(model, lake_root: str, first: dt.date, days: int, rows: int, drift: float, concept_shift: float) -> None:
    """``days`` simulated prediction days from ``first`` into the lake's labelled partitions (each under its
    outcome day, ``day + 1``); day ``i`` drifted by ``drift * i`` and ``concept_shift * i``."""
    from evergreen import lake
    from evergreen_demo import simulate as sim

    for i in range(days):
        day = first + dt.timedelta(days=i)
        frame = sim.labelled_frame(model, sim.simulate_day(model, day, rows, drift=drift * i,
                                                           concept_shift=concept_shift * i))
        lake.write_parquet_atomic(frame, lake.labelled_path(model.name, day + dt.timedelta(days=1), lake_root))


def holdout_and_live(model, window, live_window, lake_root: str, holdout_days: int | None) -> tuple[float, float]:
    """``(holdout metric, live metric)`` of the model trained on ``window``: by the platform's out-of-time split
    with ``holdout_days``, or by the old request-id hash when ``holdout_days`` is None."""
    from evergreen.train import data, evaluate, spec

    if holdout_days is None:
        frame, _ = data.load_window(model, window, lake_root)
        held = old_request_hash_holdout(frame[data.REQUEST_ID])
        train = frame.loc[~held, [*model.feature_names, spec.LABEL]].reset_index(drop=True)
        holdout = frame.loc[held].reset_index(drop=True)
    else:
        model = dataclasses.replace(model, training=dataclasses.replace(model.training, holdout_days=holdout_days))
        prepared = data.prepare(model, window, lake_root=lake_root)
        train, holdout = prepared.train, prepared.holdout
    pipeline = spec.train(model, train)
    live, _ = data.load_window(model, live_window, lake_root)
    return evaluate.evaluate(model, pipeline, holdout).value, evaluate.evaluate(model, pipeline, live).value


def holdout_vs_live(args, model) -> list[str]:
    """The holdout metric against the following days' live metric, before (old rule) and after (out of time);
    returns the verdict on the goal for each out-of-time ``holdout_days``."""
    from evergreen.train import data

    window_days = args.window_days or model.retrain.training_window_days
    oot = args.holdout_days or sorted({model.training.holdout_days, PRODUCTION_HOLDOUT_DAYS})
    rules: list[tuple[str, int | None]] = [(f"in-time hash {OLD_HOLDOUT_FRACTION:.0%} (before)", None)]
    rules += [(f"out-of-time {h} day{'s' * (h != 1)} (after)", h) for h in oot]
    span = window_days + args.live_days
    print(f"holdout against live traffic (model churn, metric {model.metric}, estimator {model.training.estimator} "
          f"{model.training.hyperparameters}): {args.windows} disjoint windows of {window_days} lake days, "
          f"{args.day_rows:,} rows a day, each followed by {args.live_days} days of live traffic")
    print(f"  before: the old rule -- a hash of the request id holds out {OLD_HOLDOUT_FRACTION:.0%} of the rows of "
          "every window day, the model trains on the rest of the same days (in time)")
    print(f"  after:  evergreen.train.data.prepare -- the window's last holdout_days lake days are the holdout, the "
          f"model trains on the days before them (out of time); holdout_days {', '.join(map(str, oot))} (churn "
          f"config: {model.training.holdout_days})")
    print("  each model: evergreen.train.spec.train; holdout and live metric: evergreen.train.evaluate.evaluate; "
          "gap = holdout - live")
    print(f"  the simulator has no time trend of its own (simulate_day is stationary unless drift/concept_shift are "
          f"passed), so the drift scenario passes them growing by the day: day i of a window (i = 0 on its first "
          f"prediction day, through its live days) is simulated with drift={args.drift_per_day:g}*i (numeric means "
          f"move {args.drift_per_day:g} SD a day, categories tilt towards their last value) and "
          f"concept_shift={args.concept_shift_per_day:g}*i (the truth's category effects scale by 1 + "
          "concept_shift: a negative shift fades them, and the live metric decays as a production model's does); the "
          "stationary control uses the same daily draws without them\n")
    scenarios = [("stationary (control: drift=0, concept_shift=0)", 0.0, 0.0),
                 (f"gradual drift (drift={args.drift_per_day:g}*i, concept_shift={args.concept_shift_per_day:g}*i)",
                  args.drift_per_day, args.concept_shift_per_day)]
    verdicts: list[str] = []
    for name, drift, concept in scenarios:
        started = time.perf_counter()
        gaps: dict[str, list[float]] = {r: [] for r, _ in rules}
        lives: dict[str, list[float]] = {r: [] for r, _ in rules}
        print(f"scenario {name}")
        print(f"  {'window (lake days)':23s} {'live days':23s}" + "".join(
            f"{r:>30s}" for r, _ in rules))
        print(f"  {'':47s}" + "".join(f"{'holdout   live     gap':>30s}" for _ in rules))
        with tempfile.TemporaryDirectory(prefix="gate-bench-lake-") as lake_root:
            for k in range(args.windows):
                first = FIRST_WINDOW_DAY + dt.timedelta(days=k * span)
                write_days(model, lake_root, first, span, args.day_rows, drift, concept)
                start = first + dt.timedelta(days=1)  # prediction day D lands on lake day D + 1
                window = data.Window(start, start + dt.timedelta(days=window_days))
                live_window = data.Window(window.end, window.end + dt.timedelta(days=args.live_days))
                row = f"  {window.tag:23s} {live_window.tag:23s}"
                for rule, h in rules:
                    holdout, live = holdout_and_live(model, window, live_window, lake_root, h)
                    gaps[rule].append(holdout - live)
                    lives[rule].append(live)
                    row += f"{holdout:>14.4f} {live:.4f} {holdout - live:+.4f}"
                print(row, flush=True)
        print("  gap holdout - live across windows: mean ± SD (SE of the mean) [min, max]; mean |gap|; mean live "
              "metric")
        for rule, _ in rules:
            print(f"    {rule:30s} {Spread.of(gaps[rule])}   |gap| {Spread.of([abs(g) for g in gaps[rule]]).mean:.4f}"
                  f"   live {Spread.of(lives[rule]).mean:.4f}")
        before = rules[0][0]
        print("  in-time gap - out-of-time gap, paired by window (> 0: the out-of-time holdout is less optimistic)")
        for rule, h in rules[1:]:
            diff = Spread.of([b - a for b, a in zip(gaps[before], gaps[rule])])
            wins = sum(b > a for b, a in zip(gaps[before], gaps[rule]))
            print(f"    {rule:30s} {diff}; smaller gap in {wins}/{args.windows} windows")
            if drift or concept:
                verdicts.append(f"{h} day{'s' * (h != 1)}: " + (
                    "met" if diff.mean > 2 * diff.se else
                    "met on the mean, within 2 SE" if diff.mean > 0 else "NOT met"
                ) + f" (difference {diff.mean:+.4f}, SE {diff.se:.4f})")
        print(f"  ({time.perf_counter() - started:.0f} s)\n")
    print("goal, under gradual drift: the out-of-time holdout's gap to live smaller than the in-time one's -- "
          + "; ".join(verdicts))
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=("all", "gate", "holdout"), default="all",
                        help="gate: the gate simulation and wall time; holdout: holdout against live traffic")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--rows", default="5000,1000,500", help="holdout sizes, comma-separated")
    parser.add_argument("--rho", type=float, default=0.9)
    parser.add_argument("--prevalence", type=float, default=None, help="share of positives (default: the simulator's)")
    parser.add_argument("--auc", type=float, default=0.80)
    parser.add_argument("--mde", type=float, default=None)
    parser.add_argument("--timing-rows", type=int, default=100_000)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=20261101)
    parser.add_argument("--windows", type=int, default=8, help="holdout vs live: disjoint training windows")
    parser.add_argument("--window-days", type=int, default=None,
                        help="holdout vs live: lake days per window (default: retrain.training_window_days)")
    parser.add_argument("--holdout-days", default=None,
                        help=f"holdout vs live: out-of-time holdout_days, comma-separated (default: the config's "
                             f"and {PRODUCTION_HOLDOUT_DAYS})")
    parser.add_argument("--live-days", type=int, default=7, help="holdout vs live: live days after each window")
    parser.add_argument("--day-rows", type=int, default=1000, help="holdout vs live: simulated rows a day")
    parser.add_argument("--drift-per-day", type=float, default=0.05,
                        help="holdout vs live: simulate_day drift added per day (feature SDs)")
    parser.add_argument("--concept-shift-per-day", type=float, default=-0.02,
                        help="holdout vs live: simulate_day concept_shift added per day")
    args = parser.parse_args()
    args.rows = [int(float(s)) for s in args.rows.split(",") if s]
    args.holdout_days = [int(s) for s in args.holdout_days.split(",") if s] if args.holdout_days else None

    started = time.perf_counter()
    model, policy = churn()
    summary = []
    if args.section in ("all", "gate"):
        print(f"promotion gate by simulation (model churn, metric {model.metric})\n")
        failing = simulate(args, model, policy)
        timing(args, model, policy)
        summary.append("the gate meets both goals (at least within simulation error) at every holdout size"
                       if not failing else f"the gate does NOT meet both goals for {', '.join(failing)}")
    if args.section in ("all", "holdout"):
        if summary:
            print()
        verdicts = holdout_vs_live(args, model)
        summary.append("goal (out-of-time holdout less optimistic than the in-time one under gradual drift): "
                       + "; ".join(f"holdout_days {v}" for v in verdicts))
    print("\nsummary: " + "; ".join(summary))
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
