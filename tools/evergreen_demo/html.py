"""The demo's HTML report: the simulated month of production as one self-contained page and one figure.

:func:`write_report` turns the month's data (a plain dict the demo assembles from the store, the registry and
Airflow) into ``index.html`` and ``month.png`` in one folder. The page has inline CSS and no script, font or
stylesheet from anywhere; the figure is drawn with matplotlib's :class:`~matplotlib.figure.Figure`, which needs
no GUI backend.

Every string in the data is untrusted (it comes from the platform, from Params and from file names): the page
escapes each one with :func:`html.escape` and builds no template from it, a link becomes an ``href`` only when it
is ``http(s)://`` or a relative path (:func:`_public_url`), and the figure renders labels without mathtext
(:func:`_label`). The same data gives byte-identical files: nothing depends on the clock, the hash seed or the host.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import math
import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGURE = "month.png"
INDEX = "index.html"
FIGSIZE = (12.0, 9.0)  # inches
DPI = 110

#: the traffic panel's stacking order; arms outside it follow, sorted
ARMS = ("champion", "challenger", "shadow", "pinned")
_ARM_COLOURS = {"champion": "#3b75af", "challenger": "#ef8636", "shadow": "#b5b5b5", "pinned": "#8c6bb1"}
_OTHER_ARM_COLOURS = ("#5fa2a0", "#c4a94d", "#a05d56", "#6b8e23")
#: one colour per model version, in version order (matplotlib's tab10): the same in every panel and the page
_VERSION_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                    "#bcbd22", "#17becf")
#: event kinds the platform emits; any other kind is drawn and listed in the generic colour
_KIND_COLOURS = {
    "bootstrap": "#17becf", "approval": "#6b8e23", "promotion": "#2ca02c", "drift": "#d62728", "decay": "#ff7f0e",
    "retrain": "#9467bd", "retrain_refused": "#8c8c8c", "gate": "#8c564b", "ab_start": "#1f77b4",
    "ab_decision": "#0b4f8a", "rollback": "#b00060", "backfill": "#e377c2", "quiet": "#c8c8c8",
}
_GENERIC_KIND_COLOUR = "#555555"
_PHASE_COLOURS = ("#f2c14e", "#e07a5f", "#81b29a", "#9c89b8")
_DRIFT_COLOURS = {False: "#7aa6c2", True: "#d62728"}
#: the states the runs table colours; any other state is shown as it is, uncoloured
_RUN_STATES = ("success", "failed", "running", "queued", "skipped", "upstream_failed")
_LABEL_CHARS = 40
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*:)?//[^/?#]*@", re.IGNORECASE)
_VERSION_IN_TEXT = re.compile(r"\b(?:version\s+|v)(\d+)\b", re.IGNORECASE)


def write_report(data: dict, out_dir: Path) -> Path:
    """Write out_dir/index.html and out_dir/month.png (and nothing outside out_dir); return the index path.

    ``data`` keys (each optional; a list may be empty): ``model``, ``metric`` (the live metric's name), ``days``
    (ISO dates), ``phases`` (``start``, ``end`` inclusive, ``name``), ``live`` (``day``, ``version``, ``value``,
    ``low``, ``high``, ``n``), ``baselines`` (``version``, ``value``), ``drift`` (``day``, ``share``, ``threshold``,
    ``drifted``, ``report``), ``traffic`` (``day``, ``arm``, ``version``, ``requests``), ``events`` (``day``,
    ``kind``, ``text``, ``link``), ``timeline`` (``day``, ``lines``), ``runs`` (``day``, ``dag_id``, ``run_id``,
    ``state``, ``url``), ``versions`` (``version``, ``status``, ``url``, ``window``), ``summary`` and ``peers``
    (rows of cells, the first the row's heading) and ``notes`` (paragraphs). A missing piece reads "none" or its
    section is left out; a malformed row or value is skipped. Rows of ``live``, ``drift``, ``traffic`` and
    ``events`` whose day is not one of ``days`` are left out of the figure and the tables.

    Each file is replaced atomically: a reader never sees half a report, and a symlink planted in ``out_dir`` is
    replaced, not followed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    month = _Month(data if isinstance(data, dict) else {})
    _write_atomic(out_dir / FIGURE, _render_png(month))
    index = out_dir / INDEX
    _write_atomic(index, _render_html(month).encode("utf-8"))
    return index


# --- reading the data: every value is checked on its own, nothing is trusted to have a type -----------------------


def _s(value: Any) -> str:
    """``value`` as display text: ``None`` is empty, control characters (not tab or newline) are dropped."""
    return "" if value is None else _CONTROL.sub("", str(value))


def _num(value: Any) -> float | None:
    """A finite number, or ``None`` (booleans, NaN, infinities and non-numbers are not numbers here)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _day(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        return None


def _flag(value: Any) -> bool:
    """A drift verdict: only a true boolean (or 1, or the text "true") counts; "false" must not read as drifted."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True or (_num(value) == 1)


def _rows(data: dict, key: str) -> list[dict]:
    rows = data.get(key)
    if not isinstance(rows, list):
        return []
    return [row for row in rows if isinstance(row, dict)]


def _pairs(data: dict, key: str) -> list[list[str]]:
    """Table rows of ``data[key]``: each a sequence of cells (a lone value is a one-cell row)."""
    rows = data.get(key)
    if not isinstance(rows, list):
        return []
    out = []
    for row in rows:
        cells = row if isinstance(row, (list, tuple)) else [row]
        out.append([_s(cell) for cell in cells])
    return out


def _version_key(version: str) -> tuple[int, int, str]:
    """Registry versions in numeric order ("2" before "10"); other labels ("legacy") after them, by name."""
    return (0, int(version), version) if version.isascii() and version.isdigit() else (1, 0, version)


class _Month:
    """The report's data, parsed once: what both the figure and the page read."""

    def __init__(self, data: dict) -> None:
        self.model = _s(data.get("model")) or "(unnamed model)"
        self.metric = _s(data.get("metric")) or "metric"
        days = data.get("days") if isinstance(data.get("days"), list) else []
        self.days = sorted({d for d in map(_day, days) if d is not None})
        self.day_number = {d: i + 1 for i, d in enumerate(self.days)}
        self.phases = [(start, end, _s(p.get("name")) or "phase")
                       for p in _rows(data, "phases")
                       if (start := _day(p.get("start"))) is not None and (end := _day(p.get("end"))) is not None
                       and start <= end]
        self.live = self._in_days(data, "live")
        self.baselines = [(_s(b.get("version")), value) for b in _rows(data, "baselines")
                          if (value := _num(b.get("value"))) is not None]
        # by day (a stable sort: one day's events keep the platform's order)
        self.drift = sorted(self._in_days(data, "drift"), key=lambda row: row["date"])
        self.traffic = self._in_days(data, "traffic")
        self.events = sorted(self._in_days(data, "events"), key=lambda row: row["date"])
        self.timeline = _rows(data, "timeline")
        self.runs = _rows(data, "runs")
        self.versions = _rows(data, "versions")
        self.summary = _pairs(data, "summary")
        self.peers = _pairs(data, "peers")
        notes = data.get("notes")
        self.notes = [_s(n) for n in notes] if isinstance(notes, list) else ([_s(notes)] if notes else [])
        labels = {_s(r.get("version")) for r in self.live + self.versions} | {v for v, _ in self.baselines}
        self.colours = {v: _VERSION_COLOURS[i % len(_VERSION_COLOURS)]
                        for i, v in enumerate(sorted(labels, key=_version_key))}

    def _in_days(self, data: dict, key: str) -> list[dict]:
        """The rows of ``data[key]`` on one of the month's days, each with its parsed ``date``."""
        rows = []
        for row in _rows(data, key):
            day = _day(row.get("day"))
            if day in self.day_number:
                rows.append({**row, "date": day})
        return rows

    def day_text(self, value: Any) -> str:
        """A day as the page shows it: the ISO date and, when it is one of the month's days, its number."""
        day = _day(value)
        if day is None:
            return _s(value) or "?"
        number = self.day_number.get(day)
        return f"{day.isoformat()} (day {number})" if number else day.isoformat()


def _kind_colour(kind: str) -> str:
    return _KIND_COLOURS.get(kind, _GENERIC_KIND_COLOUR)


# --- the figure --------------------------------------------------------------------------------------------------


def _label(text: str, limit: int = _LABEL_CHARS) -> str:
    """``text`` as a matplotlib label: one line, shortened, with "$" escaped (matplotlib parses $...$ as mathtext,
    and untrusted text can make that fail), and not starting with "_" (which a legend would silently drop)."""
    one_line = " ".join(text.split())
    if len(one_line) > limit:
        one_line = one_line[: limit - 1] + "\u2026"
    one_line = one_line.replace("$", r"\$")
    return " " + one_line if one_line.startswith("_") else one_line


def _event_label(event: dict) -> str:
    """The event's short name on the figure: its kind, and the version when its text names one ("v2", "version 2")."""
    kind = _s(event.get("kind")) or "event"
    found = _VERSION_IN_TEXT.search(_s(event.get("text")))
    return _label(f"{kind} v{found.group(1)}" if found else kind, 24)


def _render_png(month: _Month) -> bytes:
    fig = _figure(month)
    buffer = io.BytesIO()
    # no Software/date metadata: the same data gives the same bytes
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _figure(month: _Month) -> Figure:
    """The month's figure: live metric, drift share and traffic, stacked on one axis of days."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    live_ax, drift_ax, traffic_ax = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 2]})
    for ax in (live_ax, drift_ax, traffic_ax):
        _draw_context(ax, month, labelled=ax is live_ax)
    _draw_live(live_ax, month)
    _draw_drift(drift_ax, month)
    _draw_traffic(traffic_ax, month)
    if month.days:
        first, last = mdates.date2num(month.days[0]), mdates.date2num(month.days[-1])
        traffic_ax.set_xlim(first - 0.6, last + 0.6)
    traffic_ax.xaxis_date()
    locator = mdates.AutoDateLocator()
    traffic_ax.xaxis.set_major_locator(locator)
    traffic_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    if len(month.days) <= 62:
        traffic_ax.xaxis.set_minor_locator(mdates.DayLocator())
    traffic_ax.set_xlabel("simulated day")
    fig.tight_layout()
    return fig


def _draw_context(ax: Axes, month: _Month, *, labelled: bool) -> None:
    """The phases as shaded spans and the events as thin vertical lines; the labels only on the top panel."""
    import matplotlib.dates as mdates

    for i, (start, end, name) in enumerate(month.phases):
        ax.axvspan(mdates.date2num(start) - 0.5, mdates.date2num(end) + 0.5, color=_PHASE_COLOURS[i % 4],
                   alpha=0.13, lw=0, zorder=0, label=_label(f"phase: {name}") if labelled else None)
    per_day: dict[dt.date, list[dict]] = {}
    for event in month.events:
        if event.get("plot") is False:  # the table lists it; the figure marks only the loop's milestones
            continue
        per_day.setdefault(event["date"], []).append(event)
    for day, events in sorted(per_day.items()):
        x = mdates.date2num(day)
        # several events of one day: side by side within the day's width, so neither line nor label hides another
        step = min(0.3, 0.9 / len(events))
        for k, event in enumerate(events):
            kind = _s(event.get("kind"))
            offset = (k - (len(events) - 1) / 2) * step
            colour = _kind_colour(kind)
            quiet = kind == "quiet"
            ax.axvline(x + offset, color=colour, lw=0.8, alpha=0.5 if quiet else 0.8,
                       ls=":" if quiet else "-", zorder=1)
            if labelled and not quiet:  # a quiet day is the absence of an event: a line, no label
                ax.text(x + offset, 1.01, _event_label(event), transform=ax.get_xaxis_transform(), rotation=90,
                        ha="center", va="bottom", fontsize=7, color=colour, clip_on=False)


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#888888", fontsize=10)


def _draw_live(ax: Axes, month: _Month) -> None:
    import matplotlib.dates as mdates

    per_version: dict[str, list[tuple[float, float, float, float]]] = {}
    for row in month.live:
        value = _num(row.get("value"))
        if value is None:
            continue
        low, high = _num(row.get("low")), _num(row.get("high"))
        both = low is not None and high is not None
        per_version.setdefault(_s(row.get("version")), []).append(
            (mdates.date2num(row["date"]), value, low if both else math.nan, high if both else math.nan))
    for version in sorted(per_version, key=_version_key):
        points = sorted(per_version[version], key=lambda p: p[0])
        # a version that stopped serving and came back (a rollback): no line across the days it did not serve
        gapped: list[tuple[float, float, float, float]] = []
        for point in points:
            if gapped and point[0] - gapped[-1][0] > 1.5:
                gapped.append((gapped[-1][0] + 1, math.nan, math.nan, math.nan))
            gapped.append(point)
        xs, values, lows, highs = (list(column) for column in zip(*gapped, strict=True))
        colour = month.colours[version]
        ax.plot(xs, values, marker="o", ms=3.5, lw=1.5, color=colour, label=_label(f"v{version} live"), zorder=3)
        if not all(math.isnan(v) for v in lows):
            ax.fill_between(xs, lows, highs, color=colour, alpha=0.18, lw=0, zorder=2,
                            label=_label(f"v{version} 95% interval"))
    for version, value in sorted(month.baselines, key=lambda b: _version_key(b[0])):
        ax.axhline(value, color=month.colours[version], ls="--", lw=1.1, zorder=2,
                   label=_label(f"v{version} holdout {value:.3f}"))
    ax.set_ylabel(_label(month.metric))
    if not per_version and not month.baselines:
        _no_data(ax, "no live metric")
    _legend(ax)


def _draw_drift(ax: Axes, month: _Month) -> None:
    import matplotlib.dates as mdates
    from matplotlib.patches import Patch

    shares = [(row["date"], share, _flag(row.get("drifted"))) for row in month.drift
              if (share := _num(row.get("share"))) is not None]
    for drifted in (False, True):
        days = [mdates.date2num(d) for d, _, flag in shares if flag is drifted]
        ax.bar(days, [s for _, s, flag in shares if flag is drifted], width=0.7, color=_DRIFT_COLOURS[drifted],
               zorder=2)
    threshold = next((t for row in month.drift if (t := _num(row.get("threshold"))) is not None), None)
    handles: list[Any] = []
    if shares:
        handles += [Patch(color=_DRIFT_COLOURS[False], label="no drift"),
                    Patch(color=_DRIFT_COLOURS[True], label="drifted")]
    if threshold is not None:
        handles.append(ax.axhline(threshold, color="#333333", ls="--", lw=1.1, zorder=3,
                                  label=f"threshold {threshold:g}"))
    top = max([1.0, threshold or 0.0, *(s for _, s, _ in shares)])
    ax.set_ylim(0, top * 1.05)
    ax.set_ylabel("drift share")
    if not shares:
        _no_data(ax, "no drift checks")
    if handles:
        _legend(ax, handles=handles)


def _draw_traffic(ax: Axes, month: _Month) -> None:
    import matplotlib.dates as mdates

    requests: dict[str, dict[dt.date, float]] = {}
    versions: dict[str, set[str]] = {}
    for row in month.traffic:
        count = _num(row.get("requests"))
        if count is None or count <= 0:
            continue
        arm = _s(row.get("arm")) or "unknown"
        per_day = requests.setdefault(arm, {})
        per_day[row["date"]] = per_day.get(row["date"], 0.0) + count
        if _s(row.get("version")):
            versions.setdefault(arm, set()).add(_s(row.get("version")))
    arms = [a for a in ARMS if a in requests] + sorted(a for a in requests if a not in ARMS)
    days = sorted({d for per_day in requests.values() for d in per_day})
    xs = [mdates.date2num(d) for d in days]
    bottom = [0.0] * len(days)
    for i, arm in enumerate(arms):
        heights = [requests[arm].get(d, 0.0) for d in days]
        shown = ", ".join(f"v{v}" for v in sorted(versions.get(arm, ()), key=_version_key))
        colour = _ARM_COLOURS.get(arm, _OTHER_ARM_COLOURS[i % len(_OTHER_ARM_COLOURS)])
        ax.bar(xs, heights, bottom=bottom, width=0.7, color=colour, zorder=2,
               label=_label(f"{arm} ({shown})" if shown else arm, 60))
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylabel("requests")
    if bottom:
        ax.set_ylim(0, max(bottom) * 1.08)
    if not arms:
        _no_data(ax, "no traffic")
    _legend(ax)


def _legend(ax: Axes, handles: list[Any] | None = None) -> None:
    """The panel's legend, right of the panel: inside it would hide the data (tight layout makes room for it)."""
    handles = handles if handles is not None else ax.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                  frameon=False)


# --- the page ----------------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(_s(value), quote=True)


def _without_credentials(url: str) -> str:
    """``url`` without the ``user:password@`` of its authority: a link, or a URL shown as text, never carries one."""
    return _USERINFO.sub(r"\1//", url, count=1)


def _public_url(url: Any) -> str | None:
    """``url`` when it may become a link: ``http://``, ``https://`` or a relative path, without credentials;
    ``None`` for anything else (``javascript:``, ``data:``, ``//host``, text with control characters or
    surrounding spaces, which browsers strip before they read the scheme)."""
    if not isinstance(url, str) or not url or url != url.strip() or re.search(r"[\x00-\x1f\x7f\\]", url):
        return None
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() in ("http", "https"):
        return _without_credentials(url) if parts.hostname else None
    if parts.scheme or parts.netloc or ":" in url.split("/", 1)[0]:
        return None
    return url


def _link(url: Any, text: Any = None) -> str:
    """An anchor to ``url`` showing ``text`` (the URL itself by default). A URL that :func:`_public_url` refuses is
    shown as text, never linked; a missing one reads "none" (or just ``text``)."""
    public = _public_url(url)
    if public is not None:
        # percent-encode (a file name may hold spaces or quotes), then escape for the attribute
        href = html.escape(urllib.parse.quote(public, safe="/?#[]@!$&'()*+,;=:%~"), quote=True)
        return f'<a href="{href}">{_e(text if text is not None else public)}</a>'
    if url is None or url == "":
        return _e(text) if text is not None else '<span class="none">none</span>'
    refused = (f'<span class="unsafe" title="not linked: not an http(s) or relative URL">'
               f"{_e(_without_credentials(_s(url)))}</span>")
    return f"{_e(text)} ({refused})" if text is not None else refused


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "") -> str:
    """A table of cells that are already HTML (each caller escapes its values); "none" when there are no rows."""
    body = ["<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows]
    if not body:
        return '<p class="none">none</p>'
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>" if headers else ""
    klass = f' class="{cls}"' if cls else ""
    return "\n".join([f"<table{klass}>", f"<thead>{head}</thead>" if head else "", "<tbody>", *body, "</tbody>",
                      "</table>"])


def _key_values(rows: list[list[str]]) -> str:
    """Ordered key/value rows: the first cell is the row's heading."""
    body = []
    for row in rows:
        if not row:
            continue
        cells = "".join(f"<td>{_e(cell)}</td>" for cell in row[1:])
        body.append(f'<tr><th scope="row">{_e(row[0])}</th>{cells}</tr>')
    if not body:
        return '<p class="none">none</p>'
    return "\n".join(['<table class="kv">', "<tbody>", *body, "</tbody>", "</table>"])


def _kind_badge(kind: str) -> str:
    # the colour comes from this module's table, never from the data
    return f'<span class="kind" style="border-color:{_kind_colour(kind)}">{_e(kind or "event")}</span>'


def _number(value: Any, spec: str) -> str:
    number = _num(value)
    return format(number, spec) if number is not None else _e(value) or '<span class="none">none</span>'


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1d2430; background: #fbfbfa; margin: 0 auto; padding: 1.5rem 2rem 4rem; max-width: 1320px;
       line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #d9dde3; padding-bottom: 0.2rem; }
h3 { font-size: 1rem; margin: 1rem 0 0.3rem; }
.sub { color: #5b6575; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.92rem; background: #fff; }
th, td { border: 1px solid #d9dde3; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
thead th { background: #eef1f5; }
tbody tr:nth-child(even) { background: #f7f8fa; }
table.kv th { background: #eef1f5; font-weight: 600; }
td { overflow-wrap: anywhere; }
a { color: #1f5fa8; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d9dde3; background: #fff; }
figcaption { color: #5b6575; font-size: 0.9rem; }
.none { color: #8a93a0; font-style: italic; }
.unsafe { color: #9b2c2c; font-family: ui-monospace, monospace; font-size: 0.85rem; }
.kind { display: inline-block; border-left: 4px solid #555; padding-left: 0.35rem; font-family: ui-monospace,
        monospace; font-size: 0.85rem; white-space: nowrap; }
.swatch { display: inline-block; width: 0.8rem; height: 0.8rem; border-radius: 2px; margin-right: 0.35rem;
          vertical-align: -0.1rem; }
.state-success { color: #1e7a34; } .state-failed, .state-upstream_failed { color: #b42318; font-weight: 600; }
.state-running, .state-queued { color: #a15c00; } .state-skipped { color: #6b7280; }
.drifted { color: #b42318; font-weight: 600; }
.day { background: #fff; border: 1px solid #e3e6ea; border-radius: 4px; padding: 0.3rem 0.9rem; margin: 0.5rem 0; }
.day ul { margin: 0.2rem 0 0.4rem; padding-left: 1.2rem; }
code { font-family: ui-monospace, monospace; font-size: 0.88rem; }
"""


def _render_html(month: _Month) -> str:
    title = f"Evergreen demo: a month of {month.model}"
    if month.days:
        span = (f"{month.days[0].isoformat()} to {month.days[-1].isoformat()}, {len(month.days)} simulated "
                f"day{'s' if len(month.days) != 1 else ''}")
    else:
        span = "no simulated days"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        # a second line of defence: even if some value escaped escaping, no script, plugin or form would run
        '<meta http-equiv="Content-Security-Policy" content="script-src \'none\'; object-src \'none\'; '
        'base-uri \'none\'; form-action \'none\'">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">model <code>{_e(month.model)}</code>, live metric <code>{_e(month.metric)}</code>; '
        f"{_e(span)}</p>",
        "<h2>Summary</h2>",
        _key_values(month.summary),
    ]
    if month.peers:
        parts += ["<h2>Compared with simpler policies</h2>", _key_values(month.peers)]
    if month.notes:
        parts += ["<h2>Notes</h2>", *(f"<p>{_e(note)}</p>" for note in month.notes if note)]
    parts += [
        "<h2>The month</h2>",
        "<figure>",
        f'<img src="{FIGURE}" width="{int(FIGSIZE[0] * DPI)}" height="{int(FIGSIZE[1] * DPI)}" '
        f'alt="{_e(f"Live {month.metric} per version, drift share and traffic per arm, per day")}">',
        f"<figcaption>Top: live {_e(month.metric)} of each version's predictions per day with its 95% interval; "
        "dashed, the version's offline holdout metric. Middle: the share of drifted features, red on a drifted day; "
        "dashed, the threshold. Bottom: requests per arm. Shaded spans: the scenario's phases; vertical lines: "
        "events.</figcaption>",
        "</figure>",
        "<h2>Events</h2>",
        _table(("day", "kind", "text", "link"),
               ([_e(month.day_text(ev["date"])), _kind_badge(_s(ev.get("kind"))), _e(ev.get("text")),
                 _link(ev.get("link")) if ev.get("link") else '<span class="none">none</span>']
                for ev in month.events)),
        "<h2>Day by day</h2>",
        _timeline(month),
        "<h2>Airflow runs</h2>",
        _table(("day", "DAG", "run id", "state"),
               ([_e(month.day_text(run.get("day"))), f"<code>{_e(run.get('dag_id'))}</code>",
                 _link(run.get("url"), _s(run.get("run_id")) or "run") if run.get("url") else _e(run.get("run_id")),
                 _state(_s(run.get("state")))] for run in month.runs)),
        "<h2>MLflow model versions</h2>",
        _table(("version", "status", "training window"),
               ([_version_cell(month, v), _e(v.get("status")) or '<span class="none">none</span>',
                 _e(v.get("window")) or '<span class="none">none</span>'] for v in month.versions)),
        "<h2>Drift reports</h2>",
        _table(("day", "drift share", "threshold", "verdict", "report"),
               ([_e(month.day_text(row["date"])), _number(row.get("share"), ".2f"),
                 _number(row.get("threshold"), "g"),
                 '<span class="drifted">drifted</span>' if _flag(row.get("drifted")) else "no drift",
                 _link(row.get("report")) if row.get("report") else '<span class="none">none</span>']
                for row in month.drift)),
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(part for part in parts if part)


def _timeline(month: _Month) -> str:
    blocks = []
    for entry in month.timeline:
        lines = entry.get("lines")
        lines = lines if isinstance(lines, list) else ([lines] if lines else [])
        items = "".join(f"<li>{_e(line)}</li>" for line in lines) or '<li class="none">nothing recorded</li>'
        blocks.append(f'<div class="day"><h3>{_e(month.day_text(entry.get("day")))}</h3><ul>{items}</ul></div>')
    return "\n".join(blocks) if blocks else '<p class="none">none</p>'


def _state(state: str) -> str:
    if state in _RUN_STATES:  # the class name comes from this module's list, never from the data
        return f'<span class="state-{state}">{_e(state)}</span>'
    return _e(state) or '<span class="none">none</span>'


def _version_cell(month: _Month, row: dict) -> str:
    version = _s(row.get("version"))
    swatch = f'<span class="swatch" style="background:{month.colours[version]}"></span>'
    shown = f"v{version}" if version else "?"
    return swatch + (_link(row.get("url"), shown) if row.get("url") else _e(shown))


def _write_atomic(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` through a temporary file in the same folder, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
