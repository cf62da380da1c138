"""Serving: the scoring app (champion and challenger, split or shadow), its routing, the prediction log, metrics."""
