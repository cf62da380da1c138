"""The typed ``ab_test:`` policy of a model block: how champion and challenger share traffic and how the test is
decided (:mod:`evergreen.experiment.analysis`).

Standard library only, so the config loader (imported at DAG parse time) can hold one. Built and validated by the
loader's typed builder, so an invalid block fails naming the field, like every other config error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["split", "shadow"]


@dataclass(frozen=True)
class AbTestPolicy:
    # split: the challenger answers challenger_share of the entities (deterministic hash of entity id and
    # experiment id); shadow: the challenger scores every request, the champion answers, both are logged.
    mode: Mode = "split"
    challenger_share: float = 0.5

    def _check(self, where: str) -> None:
        from evergreen.config import ConfigError

        if not 0 < self.challenger_share < 1:
            raise ConfigError(f"{where}.challenger_share: {self.challenger_share} is not allowed; expected a share "
                              "between 0 and 1 (exclusive), e.g. 0.5")
