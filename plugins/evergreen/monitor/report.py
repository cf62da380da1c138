"""Evidently's data drift report of a drift run, the picture people look at beside the verdict.

Evidently wants rows, and its cost grows with them, so the report runs on a bounded, deterministic sample of the
window and of the reference (same window, same rows), configured with the methods and thresholds the engine chose.
The verdict of record stays the engine's on all rows (:mod:`evergreen.monitor.drift`); the report's banner says
so and gives the sample sizes. Evidently is imported inside the functions.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from evergreen.config import ModelConfig
    from evergreen.monitor.drift import DriftResult
    from evergreen.monitor.reference import ReferenceStats


def report_sample(frame: pd.DataFrame, size: int, seed_key: str) -> pd.DataFrame:
    """A bounded, deterministic sample (same window, same rows): a seeded draw without replacement, in order."""
    import numpy as np

    if len(frame) <= size:
        return frame.reset_index(drop=True)
    rng = np.random.default_rng(zlib.crc32(seed_key.encode()))
    rows = np.sort(rng.choice(len(frame), size=size, replace=False))
    return frame.iloc[rows].reset_index(drop=True)


def drift_report_html(result: DriftResult, reference: ReferenceStats, current: pd.DataFrame, model: ModelConfig,
                      seed_key: str) -> tuple[str, dict[str, int]] | None:
    """Evidently's data drift report on a bounded sample, configured with the engine's methods and thresholds.

    Returns ``(html, sizes)`` or None when there is nothing the report could show. The report starts with a banner
    that says the sample sizes: its numbers are those of the sample, the verdict of record is the engine's.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    judged = [f for f in result.features if f.status == "ok" and f.feature in current.columns
              and reference.sample is not None and f.feature in reference.sample.columns]
    if not judged or current.empty or reference.sample_size == 0:
        return None
    names = [f.feature for f in judged]
    size = model.drift.report_sample_size
    cur = report_sample(current[names], size, seed_key)
    ref = report_sample(reference.sample[names], size, seed_key + "/reference")
    num = [f.feature for f in judged if f.kind == "num"]
    cat = [f.feature for f in judged if f.kind != "num"]
    for frame in (cur, ref):
        for name in num:  # the engine drops nulls and +-inf; so does the report's sample
            frame[name] = frame[name].astype("float64").replace([float("inf"), float("-inf")], float("nan"))
        for name in cat:
            frame[name] = frame[name].astype(str).where(frame[name].notna(), None)
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    preset = DataDriftPreset(
        columns=names, drift_share=model.drift.drift_share,
        per_column_method={f.feature: f.method for f in judged},
        per_column_threshold={f.feature: f.threshold for f in judged},
    )
    snapshot = Report([preset]).run(current_data=Dataset.from_pandas(cur, data_definition=definition),
                                    reference_data=Dataset.from_pandas(ref, data_definition=definition))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        snapshot.save_html(str(path))
        html = path.read_text()
    sizes = {"current_sample": len(cur), "current_rows": len(current), "reference_sample": len(ref),
             "reference_rows": reference.n_rows}
    banner = (
        '<div style="font-family:sans-serif;padding:8px;background:#fff3cd">'
        f"Evergreen drift report for {model.name}: Evidently ran on a deterministic sample of "
        f"{sizes['current_sample']} of {sizes['current_rows']} current rows and {sizes['reference_sample']} reference "
        f"rows (of {sizes['reference_rows']} training rows; report_sample_size={size}). Its numbers are the sample's; "
        f"the verdict of record (all rows) is: dataset drift = {result.dataset_drift}, drifted share = "
        f"{result.drifted_share}.</div>"
    )
    marker = html.find("<body")
    if marker >= 0:
        close = html.find(">", marker) + 1
        html = html[:close] + banner + html[close:]
    else:
        html = banner + html
    return html, sizes
