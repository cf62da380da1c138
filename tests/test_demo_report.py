"""The demo's HTML report (tools/evergreen_demo/html.py): one page and one figure from the month's data.

The checks read the files the report leaves behind: the page names every event and links every run and version,
the figure is a PNG of the declared size whose panels share one colour per version, untrusted text never becomes
markup or a ``javascript:`` link, a month with missing pieces still gives a report, and the same data gives the
same bytes.
"""

from __future__ import annotations

import html
import re
import struct
from pathlib import Path

import pytest

from evergreen_demo import html as report
from evergreen_demo.html import write_report

DAYS = [f"2026-10-0{d}" for d in range(1, 7)]
RUN_URL = "http://127.0.0.1:8080/dags/monitor_drift_churn/runs/manual__2026-10-03"
VERSION_URL = "http://127.0.0.1:5000/#/models/churn/versions/2"


def month() -> dict:
    """Six days: v1 serves, drift on day 3, v2 trained and A/B tested against v1 on days 4-5, promoted on day 6."""
    live = [{"day": d, "version": "1", "value": 0.82 - 0.01 * i, "low": 0.80 - 0.01 * i, "high": 0.84 - 0.01 * i,
             "n": 980} for i, d in enumerate(DAYS)]
    live += [{"day": d, "version": "2", "value": 0.85, "low": 0.83, "high": 0.87, "n": 300} for d in DAYS[3:]]
    traffic = [{"day": d, "arm": "champion", "version": "1", "requests": 700 if d in DAYS[3:5] else 1000}
               for d in DAYS[:5]]
    traffic += [{"day": d, "arm": "challenger", "version": "2", "requests": 300} for d in DAYS[3:5]]
    traffic += [{"day": DAYS[5], "arm": "champion", "version": "2", "requests": 1000}]
    return {
        "model": "churn",
        "metric": "roc_auc",
        "days": DAYS,
        "phases": [{"start": DAYS[2], "end": DAYS[5], "name": "distribution shift"}],
        "live": live,
        "baselines": [{"version": "1", "value": 0.82}, {"version": "2", "value": 0.86}],
        "drift": [{"day": d, "share": 0.71 if i >= 2 else 0.14, "threshold": 0.5, "drifted": i >= 2,
                   "report": f"drift/{d} report.html" if i == 2 else None} for i, d in enumerate(DAYS)],
        "traffic": traffic,
        "events": [
            {"day": DAYS[0], "kind": "promotion", "text": "version 1 is champion", "link": None},
            {"day": DAYS[2], "kind": "drift", "text": "drift share 0.71 > 0.5: drift signal", "link": RUN_URL},
            {"day": DAYS[2], "kind": "retrain", "text": "retrain -> candidate v2 (window A&B)", "link": None},
            {"day": DAYS[3], "kind": "ab_start", "text": "A/B: challenger v2 gets 30% of traffic", "link": None},
            {"day": DAYS[5], "kind": "ab_decision", "text": "v2 wins: promoted", "link": VERSION_URL},
            {"day": "2026-11-30", "kind": "drift", "text": "an event after the month", "link": None},
        ],
        "timeline": [{"day": d, "lines": [f"served 1,000 requests on {d}", "drift share 0.14: no drift"]}
                     for d in DAYS],
        "runs": [{"day": DAYS[2], "dag_id": "monitor_drift_churn", "run_id": "manual__2026-10-03", "state": "success",
                  "url": RUN_URL},
                 {"day": DAYS[3], "dag_id": "retrain_churn", "run_id": "manual__2026-10-04", "state": "failed",
                  "url": None}],
        "versions": [{"version": "1", "status": "archived", "url": None, "window": "2026-09-17/2026-10-01"},
                     {"version": "2", "status": "champion", "url": VERSION_URL, "window": "2026-09-20/2026-10-04"}],
        "summary": [["Time to first champion", "day 1"], ["Wall time", "7 min 40 s"]],
        "peers": [["Evergreen", "drift day 3, recovered day 6"], ["weekly accuracy < baseline - 0.05", "never"]],
        "notes": ["A six-day month <for the test>."],
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, bytes, bytes, bytes, bytes]:
    """The report of :func:`month`, written twice into one folder: the folder and both writes' bytes."""
    out = tmp_path_factory.mktemp("report") / "month"
    index = write_report(month(), out)
    first = (index.read_bytes(), (out / "month.png").read_bytes())
    again = write_report(month(), out)
    assert again == index == out / "index.html"
    return out, *first, again.read_bytes(), (out / "month.png").read_bytes()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def hrefs(page: str) -> list[str]:
    return re.findall(r'href\s*=\s*"([^"]*)"', page, flags=re.IGNORECASE)


def test_the_report_is_one_page_and_one_figure_in_its_folder(written):
    out, page_bytes, png, _, _ = written
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "month.png"]
    assert png_size(png) == (1320, 990)  # 12 x 9 inches at 110 dpi
    assert 20_000 < len(png) < 2_000_000
    page = page_bytes.decode("utf-8")
    assert "<title>Evergreen demo: a month of churn</title>" in page
    assert '<img src="month.png"' in page
    # self-contained: no script, stylesheet, font or image from anywhere else
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert not re.search(r'src="(?!month\.png")', page)


def test_the_page_lists_every_event_of_the_month_and_links_runs_versions_and_reports(written):
    page = written[1].decode("utf-8")
    for event in month()["events"][:-1]:
        assert html.escape(event["text"]) in page
    assert "retrain -&gt; candidate v2 (window A&amp;B)" in page
    assert "an event after the month" not in page  # not one of the month's days
    for row in (["Time to first champion", "day 1"], ["weekly accuracy < baseline - 0.05", "never"]):
        assert "".join(html.escape(c) for c in row[:1]) in page and html.escape(row[1]) in page
    assert "A six-day month &lt;for the test&gt;." in page
    links = hrefs(page)
    assert RUN_URL in links and VERSION_URL in links
    assert f'<a href="{RUN_URL}">manual__2026-10-03</a>' in page  # the run id, linked to its run
    assert f'<a href="{VERSION_URL}">v2</a>' in page
    assert "drift/2026-10-03%20report.html" in links  # the drift report, relative to the page
    assert "manual__2026-10-04" in page and "retrain_churn" in page  # a run without a URL: listed, not linked
    assert "served 1,000 requests on 2026-10-06" in page  # the timeline


def test_the_same_data_gives_the_same_bytes(written, tmp_path):
    _, page, png, page_again, png_again = written
    assert page_again == page
    assert png_again == png
    elsewhere = write_report(month(), tmp_path / "other")  # another folder: nothing depends on where
    assert elsewhere.read_bytes() == page and (tmp_path / "other" / "month.png").read_bytes() == png


def test_the_figure_has_three_panels_on_one_axis_of_days_and_one_colour_per_version():
    from matplotlib.colors import to_hex

    fig = report._figure(report._Month(month()))
    live, drift, traffic = fig.axes[:3]
    assert live.get_shared_x_axes().joined(live, traffic) and drift.get_shared_x_axes().joined(drift, traffic)
    assert live.get_ylabel() == "roc_auc"
    lines = {line.get_label(): to_hex(line.get_color()) for line in live.get_lines()}
    assert lines["v1 live"] == lines["v1 holdout 0.820"] != lines["v2 live"] == lines["v2 holdout 0.860"]
    assert {"drift", "retrain v2", "ab_start v2", "promotion v1"} <= {t.get_text() for t in live.texts}
    bar_colours = {to_hex(bar.get_facecolor()) for bars in drift.containers for bar in bars}
    assert len(bar_colours) == 2  # drifted days stand out
    assert [t.get_text() for t in traffic.get_legend().get_texts()] == ["champion (v1, v2)", "challenger (v2)"]


def test_untrusted_text_is_shown_as_text_and_never_becomes_a_script_or_a_link(tmp_path):
    data = month()
    data["model"] = '<img src=x onerror="alert(1)">'
    data["events"] = [
        {"day": DAYS[1], "kind": "<b>drift</b>", "text": "<script>alert(1)</script>", "link": "javascript:alert(1)"},
        {"day": DAYS[2], "kind": "gate", "text": "ok", "link": " JavaScript:alert(2)"},
        {"day": DAYS[3], "kind": "$\\frac{$", "text": "mathtext must not break the figure", "link": "java\tscript:x"},
    ]
    data["runs"][0]["url"] = "data:text/html,<script>alert(3)</script>"
    data["versions"][1]["url"] = "//evil.example/versions/2"
    data["versions"][0]["url"] = "http://admin:s3cret@127.0.0.1:5000/#/models/churn/versions/1"
    data["drift"][2]["report"] = 'reports/a.html" onmouseover="alert(4)'
    data["timeline"][0]["lines"] = ["</li><script>alert(5)</script>"]
    data["phases"][0]["name"] = "$x^$"

    page = write_report(data, tmp_path).read_text("utf-8")
    assert "<script" not in page.lower()
    assert "<img src=x" not in page and "<b>drift" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    assert "javascript:alert(1)" in page  # shown as text, not linked
    for href in hrefs(page):
        assert re.match(r"https?://", href) or not re.match(r"[a-z][a-z0-9+.-]*:|//", href, re.IGNORECASE), href
        assert '"' not in html.unescape(href) and " " not in href
    assert not re.search(r'href="\s*(javascript|data|vbscript):', page, re.IGNORECASE)
    assert "s3cret" not in page  # a link never carries a password
    assert 'href="http://127.0.0.1:5000/#/models/churn/versions/1"' in page
    assert 'onmouseover="' not in page


def test_a_month_with_missing_pieces_still_gives_a_report(tmp_path):
    empty = write_report({}, tmp_path / "empty").read_text("utf-8")
    assert "Evergreen demo: a month of" in empty and "none" in empty
    assert png_size((tmp_path / "empty" / "month.png").read_bytes()) == (1320, 990)

    broken = {"model": "churn", "days": ["2026-10-01", "not a day", None], "live": None, "baselines": "x",
              "phases": [{"start": "2026-10-01"}], "drift": [1, None, {"day": "2026-10-01", "share": float("nan")}],
              "traffic": [{"day": "2026-10-01", "requests": "many"}], "events": [{"day": "2026-10-01"}],
              "timeline": [{"lines": "one line"}, {}], "runs": [{}], "versions": [{}], "summary": [["alone"], "x"],
              "peers": [], "notes": "a note"}
    page = write_report(broken, tmp_path / "broken").read_text("utf-8")
    assert "a month of churn" in page and "a note" in page and "one line" in page
    assert "Compared with" not in page  # no peers: no table


def test_the_report_writes_only_inside_its_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"keep")
    (out / "month.png").symlink_to(outside)  # a planted link is replaced, not followed
    write_report(month(), out)
    assert outside.read_bytes() == b"keep"
    assert not (out / "month.png").is_symlink()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "out", "out/index.html", "out/month.png", "outside.png"]
