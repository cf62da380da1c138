"""Which arm answers a row: a deterministic hash of the entity id and the experiment id (pure, standard library).

* The experiment id is ``<model>:<challenger version>`` (:func:`experiment_id`): the one fact every serving
  replica reads from the registry alone, stable for the life of a test (a new challenger is a new test), and
  different from test to test, so an entity that was in one test's challenger group is re-drawn for the next one
  instead of always carrying the treatment.
* A row goes to the challenger when ``sha256("<experiment id>\\x1f<routing key>")`` read as a fraction of 2**64 is
  below the challenger's share (:func:`assign`). The same entity gets the same arm on every request, every
  replica and every restart; over many entities the challenger's share is ``challenger_share``.
* ``shadow`` mode routes nothing: the champion answers every row and the challenger scores it too.
* Rows without an entity id (the ``features`` rows format) are routed by their request id, which the response
  states (``routed_by``): such a client gets a per-request coin, not a per-entity assignment.

In shadow mode the challenger's score of a request is logged as its own row, by the A/B analysis's contract
(:mod:`evergreen.experiment.policy`, one definition for the writer and the reader): arm ``shadow``, the challenger's
version, the same entity id and timestamp, request id :func:`~evergreen.experiment.policy.shadow_request_id`
(``<request id>~shadow``), because the store keys predictions by ``(model, request_id)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

from evergreen.experiment.policy import CHALLENGER_ARM as CHALLENGER
from evergreen.experiment.policy import CHAMPION_ARM as CHAMPION
from evergreen.experiment.policy import SHADOW_ARM as SHADOW
from evergreen.experiment.policy import shadow_request_id

ARMS = (CHAMPION, CHALLENGER)  # the arms that answer (the registry's aliases, evergreen.tracking)
RoutedBy = Literal["entity_id", "request_id"]

_SCALE = float(2**64)
_SEP = "\x1f"  # unit separator: no id can make "a" + sep + "bc" equal "ab" + sep + "c"


def experiment_id(model: str, challenger_version: str) -> str:
    """The A/B test's id: the model and the challenger's version (``churn:7``)."""
    return f"{model}:{challenger_version}"


def bucket(key: str, experiment: str) -> float:
    """The routing key's uniform position in [0, 1) for this experiment."""
    digest = hashlib.sha256(f"{experiment}{_SEP}{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign(key: str, experiment: str, challenger_share: float) -> str:
    """``champion`` or ``challenger`` for one routing key (an entity id, or a request id when there is none)."""
    return CHALLENGER if bucket(key, experiment) < challenger_share else CHAMPION


def assign_all(keys: Sequence[str], experiment: str, challenger_share: float) -> list[str]:
    return [assign(k, experiment, challenger_share) for k in keys]


__all__ = ["ARMS", "CHALLENGER", "CHAMPION", "SHADOW", "assign", "assign_all", "bucket", "experiment_id",
           "shadow_request_id"]
