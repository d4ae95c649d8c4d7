"""Atomic writers: temporary files beside the target, renamed into place when complete."""

from __future__ import annotations

import numpy as np
import pytest

from medsegflow.io import Volume, atomic_path, read_volume, stale_temporaries, write_volume


def test_a_rewrite_removes_only_its_own_leftover_temporaries(tmp_path):
    own = tmp_path / ".case01.k3x_9a0q.nii.gz"  # a killed writer's case01.nii.gz
    others = [
        tmp_path / ".case01.k3x_9a0q.lesion.nii.gz",  # another file with the same stem
        tmp_path / ".case011.k3x_9a0q.nii.gz",  # another case
        tmp_path / ".case01.short.nii.gz",  # not a mkstemp name
        tmp_path / "case01.k3x_9a0q.nii.gz",  # not hidden
    ]
    for path in (own, *others):
        path.write_bytes(b"half-written")
    target = tmp_path / "case01.nii.gz"
    assert stale_temporaries(target, ".nii.gz") == [own]
    write_volume(target, Volume(np.arange(6, dtype=np.uint8).reshape(1, 2, 3)))
    assert not own.exists() and all(p.exists() for p in others)
    np.testing.assert_array_equal(read_volume(target).array_zyx.ravel(), np.arange(6))
    hidden = sorted(p.name for p in others if p.name.startswith("."))
    assert sorted(p.name for p in tmp_path.glob(".*")) == hidden  # no temporary of ours


def test_a_failed_write_leaves_the_target_and_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("new, half", encoding="utf-8")
        assert stale_temporaries(target, ".csv") == [tmp]
        raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert list(tmp_path.glob(".*")) == []
