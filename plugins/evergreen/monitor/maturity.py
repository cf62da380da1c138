"""Have a window's labels arrived? Decided from the ingestion records of the landing days they arrive on, never
from the calendar.

The labels of predictions made on day D land on the landing days D .. D + ``label_delay_days``; a window is mature
only when ``ingest_feedback`` has recorded every one of those days. Split from :mod:`evergreen.monitor.performance`,
which measures the window once this says its labels are in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: an ``ingestion`` record whose payload says this did not land its day (today a failed day writes no record at all;
#: a record that says so is treated like a missing one)
INGESTION_FAILED = "failed"


def label_landing_days(window_start: dt.date, window_end: dt.date, label_delay_days: int) -> tuple[dt.date, ...]:
    """The landing days the labels of the window's predictions arrive on: ``D .. D + label_delay_days`` for every
    prediction day ``D`` of ``[window_start, window_end)``, i.e. ``window_start .. window_end - 1 + delay``."""
    if label_delay_days < 0:
        raise ValueError(f"performance.label_delay_days must be >= 0, got {label_delay_days}")
    n = (window_end - window_start).days + label_delay_days
    return tuple(window_start + dt.timedelta(days=i) for i in range(max(n, 0)))


def _day_ranges(days: Sequence[dt.date]) -> str:
    """``2027-03-02 .. 2027-03-05, 2027-03-09``: consecutive days as ranges (the reason stays short at 30 days)."""
    parts: list[str] = []
    ordered = sorted(set(days))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] - ordered[j] == dt.timedelta(days=1):
            j += 1
        parts.append(ordered[i].isoformat() if i == j else f"{ordered[i]} .. {ordered[j]}")
        i = j + 1
    return ", ".join(parts)


@dataclass(frozen=True)
class LabelArrival:
    """Which landing days the labels of a window arrive on, and which of them ``ingest_feedback`` has recorded."""

    model: str
    window_start: dt.date
    window_end: dt.date  # exclusive
    label_delay_days: int
    needed: tuple[dt.date, ...]
    missing: tuple[dt.date, ...] = ()  # no ingestion record
    failed: tuple[dt.date, ...] = ()  # a record that says the day failed
    unreadable: tuple[dt.date, ...] = ()  # ingested, but with unreadable files (their labels are not in the store)

    @property
    def mature(self) -> bool:
        return not self.missing and not self.failed

    @property
    def ingested(self) -> int:
        return len(self.needed) - len(self.missing) - len(self.failed)

    def describe(self) -> str:
        window = f"[{self.window_start}, {self.window_end})"
        if not self.needed:
            return f"window {window} is empty"
        head = (f"the labels of the predictions of {window} land on {self.needed[0]} .. {self.needed[-1]} "
                f"(label_delay_days={self.label_delay_days}); ingest_feedback_{self.model} has recorded "
                f"{self.ingested} of those {len(self.needed)} landing days")
        if self.unreadable:
            head += (f" ({len(self.unreadable)} of them with unreadable files, whose labels are not in the store: "
                     f"{_day_ranges(self.unreadable)})")
        if self.mature:
            return head
        gaps = []
        if self.missing:
            gaps.append(f"no ingestion record for {len(self.missing)} day(s): {_day_ranges(self.missing)}")
        if self.failed:
            gaps.append(f"ingestion failed for {len(self.failed)} day(s): {_day_ranges(self.failed)}")
        return (f"{head}; {'; '.join(gaps)} -- run ingest_feedback_{self.model} for those days, then re-run this "
                "interval")

    def to_dict(self) -> dict[str, Any]:
        return {
            "mature": self.mature, "label_delay_days": self.label_delay_days,
            "landing_days": [self.needed[0].isoformat(), self.needed[-1].isoformat()] if self.needed else [],
            "n_landing_days": len(self.needed), "n_ingested": self.ingested,
            "missing": [d.isoformat() for d in self.missing], "failed": [d.isoformat() for d in self.failed],
            "unreadable_files_on": [d.isoformat() for d in self.unreadable],
        }


def label_arrival(model: str, window_start: dt.date, window_end: dt.date, label_delay_days: int,
                  ingestion: Mapping[dt.date, Mapping[str, Any] | None]) -> LabelArrival:
    """Are the window's labels in? ``ingestion`` maps a landing day to its ``ingestion`` record payload (None or
    absent: no record). Mature only when every needed landing day has a record that is not a failure."""
    needed = label_landing_days(window_start, window_end, label_delay_days)
    missing, failed, unreadable = [], [], []
    for day in needed:
        payload = ingestion.get(day)
        if payload is None:
            missing.append(day)
        elif str(payload.get("status", "")).lower() == INGESTION_FAILED:
            failed.append(day)
        elif payload.get("files_unreadable"):
            unreadable.append(day)
    return LabelArrival(model, window_start, window_end, label_delay_days, needed, tuple(missing), tuple(failed),
                        tuple(unreadable))


# --- metrics with confidence intervals ----------------------------------------------------------------------
