"""The lake's atomic writes."""

from __future__ import annotations

import os
import time

import pandas as pd

from evergreen import lake


def test_write_is_atomic_and_sweeps_temp_files_left_by_a_killed_writer(tmp_path):
    target = tmp_path / "m" / "labelled" / "dt=2026-11-02" / "part-0.parquet"
    target.parent.mkdir(parents=True)
    stale = target.parent / ".tmp-part-0.parquet-deadbeef"
    live = target.parent / ".tmp-part-0.parquet-cafe"  # a concurrent writer's file: recent, must stay
    other = target.parent / ".tmp-other.parquet-dead"  # another target's temp file: not ours to remove
    for f in (stale, live, other):
        f.write_bytes(b"half a parquet file")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    os.utime(other, (two_hours_ago, two_hours_ago))

    frame = pd.DataFrame({"request_id": ["a", "b"], "label": [0, 1]})
    lake.write_parquet_atomic(frame, str(target))

    pd.testing.assert_frame_equal(lake.read_parquet(str(target)), frame)
    assert not stale.exists()
    assert live.exists() and other.exists()
