"""The A/B analysis by simulation: false positives under daily looks, power at the minimum detectable effect, sample
ratio mismatch detection, and the analysis's wall time over 1e6 logged predictions.

Every figure uses the churn model's ``ab_test:`` policy (``include/config/churn.yaml``: the churn rate among each
arm's customers, lower is better, alpha 0.05, minimum detectable effect 2 points at 80% power, sequential tuning
15,000) and the platform's own code: the effect of each look is :func:`evergreen.stats.two_sample_difference` on the
arms' per-customer outcomes, the decision :func:`evergreen.experiment.analysis.judge` -- what
:func:`~evergreen.experiment.analysis.analyze` runs after it has joined the log with the outcomes. A check at the
start runs ``analyze`` itself, on the log frames, for a few of the simulated tests and asserts it decides as the
fast path does at every look.

**Tests.** A churn rate of ``--rate`` (25%) in the champion arm; each day ``daily`` new customers per arm, one
matured outcome each; ``daily`` is set so that the fixed-horizon minimum sample size for the MDE
(:func:`evergreen.stats.minimum_sample_size`) is reached on day ``--nmin-day`` (10). The test looks once a day for
``max_days`` (30) days, and stops at its first decision (promote, or stop: worse, futility, horizon).

* **A/A** (``--tests`` 1,000, the same rate in both arms): the false-positive rate is the share of tests whose
  decision is promote or stop-as-worse. Beside it, the rule a user would write instead: a fixed-horizon two-proportion
  z test at alpha every day, counted as a false positive at the first look with p < alpha.
* **Power** (the challenger's rate lower by the MDE): the share of tests promoted within the horizon, with
  ``daily`` set for N_min on day 10 and on day 30; and the fixed-horizon test's power at N_min (the 80% the MDE is
  defined by), as the reference.

**SRM.** The chi-square check (:func:`evergreen.stats.chi_square_gof`, p < ``srm_p_value`` = 0.001) on a split of
exactly 50,500 / 49,500 of 100,000 customers; then ``--srm-tests`` splits of 100,000 customers each assigned to the
challenger with probability 0.505 (and 0.5 for the false-alarm rate); and one such split through ``analyze``.

**Wall time.** ``analyze`` on a 1e6-row prediction log (split, churn rate; model metric; shadow mode, 5e5 requests
logged twice) with its outcomes, after the frames are built.

    python bench/ab.py [--tests 1000] [--rate 0.25] [--nmin-day 10] [--srm-tests 1000] [--rows 1000000] [--seed 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import time

START = dt.date(2026, 12, 1)


def wilson(k: int, n: int) -> str:
    from evergreen import stats

    iv = stats.proportion_interval(k, n)
    return f"{k / n:6.1%} (95% CI {iv.low:.1%}-{iv.high:.1%}, {k}/{n})"


def model_with(**changes):
    from evergreen.config import get_config

    model = get_config().model("churn")
    return dataclasses.replace(model, ab_test=dataclasses.replace(model.ab_test, **changes))


def minimum_units(policy, rate: float) -> int:
    from evergreen import stats

    sd_c = math.sqrt(rate * (1 - rate))
    sd_t = math.sqrt((rate - policy.min_detectable_effect) * (1 - rate + policy.min_detectable_effect))
    return stats.minimum_sample_size(sd_c, sd_t, policy.min_detectable_effect, confidence=1 - policy.alpha,
                                     power=policy.power, share_b=policy.challenger_share)


def run_test(policy, units_c, units_t, daily_c: int, daily_t: int):
    """One simulated test, looked at every day of the horizon: ``(first decision or None, its day, first day a
    daily z test had p < alpha, first day the confidence sequence excluded 0)`` (None: never)."""
    first = naive_day = cs_day = None
    day_of = policy.max_days
    for day in range(1, policy.max_days + 1):
        c, t = units_c[: day * daily_c], units_t[: day * daily_t]
        effect, verdict = look(policy, c, t, day)
        if naive_day is None and effect.p_value < policy.alpha:
            naive_day = day
        if cs_day is None and (verdict.sequence.low > 0 or verdict.sequence.high < 0):
            cs_day = day
        if first is None and verdict.status != "continue":
            first, day_of = verdict, day
    return first, day_of, naive_day, cs_day


def frames(rng, units_c, units_t, days: int, daily: int):
    """The prediction log and outcomes of a split test, one customer per request (what ``analyze`` reads)."""
    import numpy as np
    import pandas as pd

    n_c, n_t = days * daily, days * daily
    arm = np.array(["champion"] * n_c + ["challenger"] * n_t, dtype=object)
    label = np.concatenate([units_c[:n_c], units_t[:n_t]])
    n = len(arm)
    ids = np.char.add("r", np.arange(n).astype(str)).astype(object)
    pred = pd.DataFrame({"request_id": ids, "entity_id": np.char.add("e", np.arange(n).astype(str)).astype(object),
                         "model_version": np.where(arm == "champion", "1", "2"), "arm": arm,
                         "prediction": 0.0, "score": rng.random(n)})
    return pred, pd.DataFrame({"request_id": ids, "label": label})


def look(policy, c, t, day: int):
    """The fast path's verdict on one look at the per-customer outcomes ``c`` (champion) and ``t``."""
    from evergreen import stats
    from evergreen.experiment.analysis import judge

    effect = stats.two_sample_difference(c, t, 1 - policy.alpha)
    sd = [math.sqrt(v.mean() * (1 - v.mean())) for v in (c, t)]
    n_min = stats.minimum_sample_size(*sd, policy.min_detectable_effect, confidence=1 - policy.alpha,
                                      power=policy.power, share_b=policy.challenger_share)
    sign = 1.0 if policy.better == "higher" else -1.0
    return effect, judge(policy, sign * effect.value, effect.se, len(c) + len(t), n_min, day)


def check_full_path(policy, model, rng, rate: float, daily: int, tests: int) -> str:
    """``analyze`` on the log frames decides as the fast path does, at looks of ``tests`` A/A tests."""
    import numpy as np

    from evergreen.experiment.analysis import analyze

    looks = 0
    for _ in range(tests):
        total = policy.max_days * daily
        units_c = (rng.random(total) < rate).astype("float64")
        units_t = (rng.random(total) < rate).astype("float64")
        for day in (1, 5, 10, 20, 30):
            pred, out = frames(rng, units_c, units_t, day, daily)
            full = analyze(pred, out, model, champion_version="1", challenger_version="2", window_start=START,
                           window_end=START + dt.timedelta(days=day), as_of=START, seed=1)
            _, verdict = look(policy, units_c[: day * daily], units_t[: day * daily], day)
            assert full.status == verdict.status, (day, full.status, verdict.status, full.reason)
            assert np.isclose(full.sequential["low"], verdict.sequence.low), (full.sequential, verdict.sequence)
            looks += 1
    return f"analyze() on the log frames agreed with the fast path at {looks} looks of {tests} A/A tests"


def main() -> int:
    import numpy as np
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.25)
    parser.add_argument("--nmin-day", type=int, default=10)
    parser.add_argument("--srm-tests", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    began = time.perf_counter()
    model = model_with()
    policy = model.ab_test
    rng = np.random.default_rng(args.seed)
    mde = policy.min_detectable_effect
    n_min = minimum_units(policy, args.rate)
    print(f"policy: {policy.metric} ({policy.better} is better), alpha {policy.alpha}, MDE {mde}, power "
          f"{policy.power}, sequential_tuning {policy.sequential_tuning}, max_days {policy.max_days}, "
          f"min_units_per_arm {policy.min_units_per_arm}")
    print(f"champion churn rate {args.rate}; fixed-horizon minimum sample size for the MDE: {n_min} customers "
          f"(both arms)")

    daily = math.ceil(n_min / 2 / args.nmin_day)
    print(check_full_path(policy, model, np.random.default_rng(args.seed + 1), args.rate, daily, 4))

    # --- A/A ---------------------------------------------------------------------------------------------------
    total = policy.max_days * daily
    t0 = time.perf_counter()
    fp = naive = cs_only = 0
    reasons: dict[str, int] = {}
    stop_days = []
    for _ in range(args.tests):
        c = (rng.random(total) < args.rate).astype("float64")
        t = (rng.random(total) < args.rate).astype("float64")
        verdict, day, naive_day, cs_day = run_test(policy, c, t, daily, daily)
        kind = "continue to the end" if verdict is None else f"{verdict.status} {verdict.stop_status or ''}".strip()
        reasons[kind] = reasons.get(kind, 0) + 1
        stop_days.append(day)
        fp += verdict is not None and (verdict.status == "promote" or verdict.stop_status == "rejected")
        naive += naive_day is not None
        cs_only += cs_day is not None
    print(f"\nA/A: {args.tests} tests, {daily} customers per arm per day (N_min on day {args.nmin_day}), daily looks "
          f"for {policy.max_days} days ({time.perf_counter() - t0:.1f} s)")
    print(f"  false-positive rate, ab_analysis (always-valid CS):   {wilson(fp, args.tests)}   goal: alpha "
          f"{policy.alpha:.0%} +- 1 point")
    print(f"  false-positive rate, naive daily two-proportion z:   {wilson(naive, args.tests)}")
    print(f"  the confidence sequence alone, all {policy.max_days} looks, no futility stop: "
          f"{wilson(cs_only, args.tests)}")
    print("  first decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
          + f"; mean day of the first decision {sum(stop_days) / len(stop_days):.1f}")

    # --- power ---------------------------------------------------------------------------------------------------
    print(f"\npower at the MDE (challenger churn {args.rate - mde:.2f} vs {args.rate:.2f}), {args.tests} tests each:")
    for day_nmin in (args.nmin_day, policy.max_days):
        d = math.ceil(n_min / 2 / day_nmin)
        tot = policy.max_days * d
        t0 = time.perf_counter()
        wins = days = 0
        for _ in range(args.tests):
            c = (rng.random(tot) < args.rate).astype("float64")
            t = (rng.random(tot) < args.rate - mde).astype("float64")
            verdict, day, _, _ = run_test(policy, c, t, d, d)
            if verdict is not None and verdict.status == "promote":
                wins += 1
                days += day
        mean_day = f", mean day of promotion {days / wins:.1f}" if wins else ""
        print(f"  N_min reached on day {day_nmin:2d} ({d} per arm per day): promoted {wilson(wins, args.tests)}"
              f"{mean_day} ({time.perf_counter() - t0:.1f} s)")
    from evergreen import stats

    half = n_min // 2
    hits = 0
    for _ in range(args.tests):
        c = rng.random(half) < args.rate
        t = rng.random(half) < args.rate - mde
        e = stats.two_sample_difference(c.astype("float64"), t.astype("float64"), 1 - policy.alpha)
        hits += e.p_value < policy.alpha and e.value < 0
    print(f"  reference, one fixed-horizon z test at N_min: {wilson(hits, args.tests)} (the MDE's defining "
          f"{policy.power:.0%})")

    # --- SRM -----------------------------------------------------------------------------------------------------
    stat, p = stats.chi_square_gof([50_500, 49_500], [0.5, 0.5])
    print(f"\nSRM: 50,500 / 49,500 of 100,000 exactly: chi-square {stat:.2f}, p = {p:.5f} -> "
          f"{'flagged' if p < policy.srm_p_value else 'not flagged'} at p < {policy.srm_p_value}")
    for share in (0.505, 0.5):
        flagged = sum(stats.chi_square_gof([n_t := rng.binomial(100_000, share), 100_000 - n_t],
                                           [0.5, 0.5])[1] < policy.srm_p_value for _ in range(args.srm_tests))
        label = "detected" if share != 0.5 else "false alarms"
        print(f"  {args.srm_tests} splits of 100,000 with true challenger share {share}: {label} "
              f"{wilson(int(flagged), args.srm_tests)}")
    for n in (1_000_000,):
        flagged = sum(stats.chi_square_gof([n_t := rng.binomial(n, 0.505), n - n_t], [0.5, 0.5])[1]
                      < policy.srm_p_value for _ in range(args.srm_tests))
        print(f"  {args.srm_tests} splits of {n:,} with true challenger share 0.505: detected "
              f"{wilson(int(flagged), args.srm_tests)}")
    from evergreen.experiment.analysis import analyze

    n = 100_000
    arm_t = rng.random(n) < 0.505
    units = (rng.random(n) < args.rate).astype("float64")
    ids = np.char.add("r", np.arange(n).astype(str)).astype(object)
    arm = np.where(arm_t, "challenger", "champion").astype(object)
    pred = pd.DataFrame({"request_id": ids, "entity_id": np.char.add("e", np.arange(n).astype(str)).astype(object),
                         "model_version": np.where(arm_t, "2", "1"), "arm": arm, "prediction": 0.0,
                         "score": rng.random(n)})
    out = pd.DataFrame({"request_id": ids, "label": units})
    res = analyze(pred, out, model, champion_version="1", challenger_version="2", window_start=START,
                  window_end=START + dt.timedelta(days=7), as_of=START)
    print(f"  one simulated 50.5% split through analyze(): counts {res.srm['counts']}, p = {res.srm['p_value']:.2g} "
          f"-> mismatch {res.srm['mismatch']}, status {res.status}")

    # --- wall time -------------------------------------------------------------------------------------------------
    print(f"\nwall time of analyze() over {args.rows:,} logged predictions (frames built beforehand):")
    n = args.rows
    ids = np.char.add("r", np.arange(n).astype(str)).astype(object)
    ent = np.char.add("e", rng.integers(0, n // 3, n).astype(str)).astype(object)
    arm_t = (np.frompyfunc(hash, 1, 1)(ent).astype("int64") % 2 == 0)  # an entity stays in its arm
    label = (rng.random(n) < args.rate).astype("float64")
    score = np.clip(0.3 * label + rng.normal(0.35, 0.2, n), 0, 1)
    pred = pd.DataFrame({"request_id": ids, "entity_id": ent, "model_version": np.where(arm_t, "2", "1"),
                         "arm": np.where(arm_t, "challenger", "champion").astype(object),
                         "prediction": (score >= 0.5).astype("float64"), "score": score})
    out = pd.DataFrame({"request_id": ids, "label": label})
    cases = [("split, churn rate per customer", model, pred, out),
             ("split, roc_auc per arm", model_with(metric="model_metric"), pred, out)]
    half = n // 2
    sid = np.concatenate([ids[:half], np.char.add(ids[:half].astype(str), "~shadow").astype(object)])
    shadow = pd.DataFrame({"request_id": sid, "entity_id": np.concatenate([ent[:half], ent[:half]]),
                           "model_version": ["1"] * half + ["2"] * half,
                           "arm": ["champion"] * half + ["shadow"] * half,
                           "prediction": np.concatenate([pred["prediction"][:half]] * 2),
                           "score": np.concatenate([score[:half], np.clip(score[:half] + rng.normal(0, .1, half), 0,
                                                                          1)])})
    cases.append(("shadow, paired roc_auc (5e5 requests x 2 rows)", model_with(mode="shadow"), shadow,
                  out.iloc[:half]))
    for name, m, p_frame, o_frame in cases:
        t0 = time.perf_counter()
        res = analyze(p_frame, o_frame, m, champion_version="1", challenger_version="2", window_start=START,
                      window_end=START + dt.timedelta(days=14), as_of=START)
        took = time.perf_counter() - t0
        note = f"; {res.bootstrap_note}" if res.bootstrap_note else ""
        print(f"  {name}: {took:.2f} s -> {res.status}, {res.units:,} units{note}")
    print(f"\nbench/ab.py total {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
