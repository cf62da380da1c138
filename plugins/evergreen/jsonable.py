"""One rule for turning computed values into JSON for records, XCom and MLflow."""

from __future__ import annotations

import math
from typing import Any


def jsonable(value: Any) -> Any:
    """JSON-friendly: numpy/pandas scalars become Python numbers, NaN and infinities become None, and dicts,
    lists and tuples are cleaned recursively (tuples become lists)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
