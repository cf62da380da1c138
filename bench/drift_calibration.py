"""Calibration of the drift policy by simulation: false alarms, power, and days to detect a change.

Two schemas, both scored with :func:`evergreen.monitor.drift.compute_drift` against a reference built once with
:func:`evergreen.monitor.reference.build_reference` (``--reference-rows`` training rows):

* ``churn`` -- the demo model of ``include/config/churn.yaml`` (4 numeric, 2 categorical, 1 boolean feature),
  traffic from :func:`evergreen_demo.simulate.feature_frame`; "half of the columns" = its 4 numeric features (4 of 7);
* ``wide`` -- the schema of ``bench/drift.py`` (20 numeric + 2 categorical); half = 11 numeric features (11 of 22).

For each policy and window size (rows per daily window):

1. no change: ``--windows`` windows drawn from the training distribution -> share of windows where the dataset
   verdict fires (goal: <= 5%);
2. shift: the same number of windows with a 0.5-standard-deviation mean shift in half of the columns -> share of
   windows where it fires (goal: >= 95%);
3. change point (``--stream-rows`` rows a day): a 60-day stream that changes on day 30, once abruptly (0.5 sd in
   half of the columns) and once gradually (+0.05 sd per day in half of the columns) -> false alarms before the
   change and days from the change to the first dataset-drift verdict (0 = on the day of the change).

Policies: ``default`` (Evidently's defaults: reference > 1000 rows -> normed Wasserstein 0.1 / Jensen-Shannon 0.1,
``drift_share`` 0.5) and, for comparison, ``ks`` (K-S p-value 0.05 pinned for numeric features).

    python bench/drift_calibration.py [--windows 100] [--window-rows 100,200,300,1000,3000] [--stream-rows 1000]
                                      [--reference-rows 50000] [--policies default,ks]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

GOAL_FALSE_ALARMS = 0.05
GOAL_POWER = 0.95
SHIFT_SD = 0.5
CHANGE_DAY, STREAM_DAYS, RAMP_SD_PER_DAY = 30, 60, 0.05


@dataclasses.dataclass(frozen=True)
class Schema:
    name: str
    model: object
    shifted: tuple[str, ...]  # the "half of the columns" that get the mean shift

    def window(self, n: int, seed: object, shift_sd: float = 0.0):
        raise NotImplementedError


class ChurnSchema(Schema):
    def window(self, n, seed, shift_sd=0.0):
        from evergreen_demo import simulate

        frame = simulate.feature_frame(self.model, n, seed)
        if shift_sd:
            # same seed, same draws: only the numeric means move (simulate shifts numeric means by drift * sd)
            moved = simulate.feature_frame(self.model, n, seed, drift=shift_sd)
            for name in self.shifted:
                frame[name] = moved[name]
        return frame


class WideSchema(Schema):
    def window(self, n, seed, shift_sd=0.0):
        import zlib

        import numpy as np
        import pandas as pd

        rng = np.random.default_rng(zlib.crc32(str(seed).encode()))
        cols = {}
        for i in range(20):
            mean, std = 10.0 * i, 1.0 + 0.5 * i
            x = rng.normal(mean + (shift_sd * std if f"n{i:02d}" in self.shifted else 0.0), std, n)
            if i in (12, 13):
                x[rng.random(n) < 0.05] = np.nan
            cols[f"n{i:02d}"] = x
        cols["c0"] = rng.choice(np.array(list("abcde"), dtype=object), n)
        cols["c1"] = rng.choice(np.array(list("abcdefghijkl"), dtype=object), n)
        return pd.DataFrame(cols)


def schemas() -> list[Schema]:
    from evergreen.config import FeatureSpec, LabelSpec, ModelConfig, get_config

    churn = get_config().model("churn")
    numeric = tuple(f.name for f in churn.features if f.type in ("int", "float"))
    features = [FeatureSpec(f"n{i:02d}", "float", nullable=i in (12, 13)) for i in range(20)]
    features += [FeatureSpec("c0", "category", categories=tuple("abcde")),
                 FeatureSpec("c1", "category", categories=tuple("abcdefghijkl"))]
    wide = ModelConfig(name="wide", entity_id="entity", label=LabelSpec("y"), features=tuple(features))
    return [ChurnSchema("churn", churn, numeric), WideSchema("wide", wide, tuple(f"n{i:02d}" for i in range(11)))]


def with_policy(model, policy: str):
    if policy == "default":
        return model
    return dataclasses.replace(model, drift=dataclasses.replace(model.drift, method=policy))


def fire_rate(schema: Schema, model, reference, n: int, windows: int, shift_sd: float, tag: str) -> tuple[float, int]:
    from evergreen.monitor.drift import compute_drift

    fired = judged = 0
    for i in range(windows):
        result = compute_drift(reference, schema.window(n, f"{tag}-{n}-{i}", shift_sd), model)
        judged += result.status == "ok"
        fired += bool(result.dataset_drift)
    return fired / windows, windows - judged


def stream(schema: Schema, model, reference, n: int, ramp: bool) -> tuple[int, int | None]:
    """``(false alarms before the change, days from the change to the first drift verdict)``."""
    from evergreen.monitor.drift import compute_drift

    false_alarms, detected = 0, None
    for day in range(STREAM_DAYS):
        after = day - CHANGE_DAY
        shift = 0.0 if after < 0 else (RAMP_SD_PER_DAY * (after + 1) if ramp else SHIFT_SD)
        drift = compute_drift(reference, schema.window(n, f"stream-{ramp}-{day}", shift), model).dataset_drift
        if drift and after < 0:
            false_alarms += 1
        if drift and after >= 0 and detected is None:
            detected = after
    return false_alarms, detected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=100)
    parser.add_argument("--window-rows", default="100,200,300,1000,3000")
    parser.add_argument("--stream-rows", type=int, default=1000)
    parser.add_argument("--reference-rows", type=int, default=50_000)
    parser.add_argument("--policies", default="default,ks")
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.window_rows.split(",") if s]
    policies = [p for p in args.policies.split(",") if p]

    from evergreen.monitor.drift import compute_drift
    from evergreen.monitor.reference import build_reference

    started = time.perf_counter()
    print(f"drift calibration: {args.windows} windows per cell, reference of {args.reference_rows:,} rows; goals: "
          f"no change fires <= {GOAL_FALSE_ALARMS:.0%}, {SHIFT_SD} sd shift in half the columns fires >= "
          f"{GOAL_POWER:.0%}\n")
    summary = []
    for schema in schemas():
        reference = build_reference(schema.window(args.reference_rows, "reference"), schema.model)
        print(f"schema {schema.name}: {len(schema.model.features)} features, shifted: {', '.join(schema.shifted)} "
              f"({len(schema.shifted)} of {len(schema.model.features)})")
        for policy in policies:
            model = with_policy(schema.model, policy)
            probe = compute_drift(reference, schema.window(sizes[-1], "probe"), model)
            methods = sorted({f.method for f in probe.features})
            print(f"  policy {policy} (methods: {', '.join(methods)}; drift_share {model.drift.drift_share})")
            for n in sizes:
                calm, calm_unjudged = fire_rate(schema, model, reference, n, args.windows, 0.0, "calm")
                shifted, _ = fire_rate(schema, model, reference, n, args.windows, SHIFT_SD, "shift")
                ok = calm <= GOAL_FALSE_ALARMS and shifted >= GOAL_POWER
                summary.append((schema.name, policy, n, ok))
                note = f"; {calm_unjudged} windows cannot be judged" if calm_unjudged else ""
                print(f"    window {n:>6,} rows: no change fires {calm:6.1%}   shift fires {shifted:6.1%}   "
                      f"goals {'met' if ok else 'NOT met'}{note}")
            for ramp in (False, True):
                alarms, delay = stream(schema, model, reference, args.stream_rows, ramp)
                kind = f"gradual (+{RAMP_SD_PER_DAY} sd/day)" if ramp else f"abrupt ({SHIFT_SD} sd)"
                found = "not detected in 30 days" if delay is None else f"detected {delay} day(s) after the change"
                if ramp and delay is not None:
                    found += f" (shift then {RAMP_SD_PER_DAY * (delay + 1):.2f} sd)"
                print(f"    change point, {kind:24s} window {args.stream_rows:,} rows: {found}; "
                      f"{alarms} false alarm(s) in the {CHANGE_DAY} days before")
        print()
    failing = [f"{s}/{p}@{n}" for s, p, n, ok in summary if not ok]
    print("summary: goals met for every schema, policy and window size" if not failing else
          f"summary: goals NOT met for {', '.join(failing)}")
    for policy in policies:
        # the smallest window from which on the policy meets both goals for every schema
        good = [n for n in sizes if all(ok for s, p, m, ok in summary if p == policy and m >= n)]
        print(f"  policy {policy}: " + (f"meets both goals for windows of >= {good[0]:,} rows" if good else
                                         "does not meet both goals at any window size tried"))
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
