"""The gate report: every check the gate ran, its numbers and its verdict, and the outcome.

One object, four renderings: :meth:`GateReport.to_json` (the MLflow artifact and the ledger entry's source),
:meth:`~GateReport.to_markdown` and :meth:`~GateReport.to_html` (the page a reviewer reads, e.g. in the approval
step) and :attr:`~GateReport.summary` (one line for the version tag). Reasons can quote exception messages and
version tags, so both pages render them as escaped data, never as markup.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from evergreen.jsonable import jsonable

REJECT = "reject"
AB_TEST = "ab_test"
PROMOTE = "promote"
OUTCOMES = (REJECT, AB_TEST, PROMOTE)
PASS = "pass"
FAIL = "fail"
SKIP = "skip"  # not applicable, or too few rows to judge: never a pass, never a fail
#: the longest summary written to a version tag (MLflow caps tag values; the full report is an artifact)
SUMMARY_CHARS = 500


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GateReport:
    model: str
    metric: str
    candidate_version: str
    champion_version: str | None
    outcome: str
    reason: str
    approval_required: bool
    confidence: float
    policy: dict[str, Any]
    checks: tuple[Check, ...]
    #: the paired comparison (a = champion, b = candidate) as :meth:`evergreen.stats.PairedEstimate.to_dict`
    comparison: dict[str, Any] | None = None

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == FAIL]

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def summary(self) -> str:
        """One line: the outcome, the versions and the reason, cut to :data:`SUMMARY_CHARS`."""
        versus = f" vs champion {self.champion_version}" if self.champion_version else " (first model)"
        text = f"{self.outcome}: version {self.candidate_version}{versus}: {self.reason}"
        return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 3] + "..."

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["checks"] = [asdict(c) for c in self.checks]
        return jsonable(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> GateReport:
        data = json.loads(text)
        data["checks"] = tuple(Check(**c) for c in data["checks"])
        return cls(**data)

    def _rows(self) -> list[tuple[str, str, str, str]]:
        return [(c.name, c.verdict, _numbers(c.numbers), c.reason) for c in self.checks]

    def _title(self) -> str:
        versus = f"champion {self.champion_version}" if self.champion_version else "no champion (first model)"
        return f"Gate report: {self.model} version {self.candidate_version} vs {versus}"

    def to_markdown(self) -> str:
        def cell(text: str) -> str:
            return " ".join(str(text).split()).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")

        lines = [
            f"# {cell(self._title())}",
            "",
            f"**Outcome: {self.outcome}**{' (approval required)' if self.approval_required else ''} -- "
            f"{cell(self.reason)}",
            "",
            f"Metric `{self.metric}`, confidence {self.confidence}.",
            "",
            "| check | verdict | numbers | reason |",
            "|---|---|---|---|",
            *(f"| {' | '.join(cell(v) for v in row)} |" for row in self._rows()),
            "",
        ]
        return "\n".join(lines)

    def to_html(self) -> str:
        e = html.escape
        rows = "\n".join(
            f"<tr class=\"{e(v)}\"><td>{e(n)}</td><td>{e(v)}</td><td>{e(num)}</td><td>{e(r)}</td></tr>"
            for n, v, num, r in self._rows()
        )
        approval = " (approval required)" if self.approval_required else ""
        return (
            "<!doctype html><html><head><meta charset=\"utf-8\">"
            f"<title>{e(self._title())}</title><style>body{{font-family:sans-serif}}td,th{{padding:2px 8px;"
            "text-align:left;vertical-align:top}}tr.fail{background:#fdd}tr.pass{background:#dfd}</style></head><body>"
            f"<h1>{e(self._title())}</h1><p><b>Outcome: {e(self.outcome)}</b>{e(approval)}: {e(self.reason)}</p>"
            f"<p>Metric {e(self.metric)}, confidence {e(str(self.confidence))}.</p>"
            f"<table><tr><th>check</th><th>verdict</th><th>numbers</th><th>reason</th></tr>\n{rows}\n</table>"
            "</body></html>\n"
        )


def _numbers(numbers: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in jsonable(numbers).items() if v is not None)
