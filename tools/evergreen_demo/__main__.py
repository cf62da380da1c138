"""``python -m evergreen_demo``: the demo scenario on embedded defaults (what ``make demo`` runs)."""

from __future__ import annotations

from evergreen_demo.cli import main

raise SystemExit(main())
