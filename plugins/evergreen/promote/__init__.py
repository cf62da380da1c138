"""Promotion: the gate that decides reject / A/B test / promote for a candidate version (:mod:`.gate`, a pure
function of typed facts and the model's ``gate:`` policy, :mod:`.policy`), the registry moves it leads to
(:mod:`.registry`: ``champion`` and ``challenger`` aliases by compare-and-set, status tags) and the append-only
ledger of every outcome and move (:mod:`.ledger`, readable with ``python -m evergreen.promote.ledger``)."""
