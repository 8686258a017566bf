"""Atomic writes: the old content or the complete new one, never half, and no temporary left."""

from __future__ import annotations

import pytest

from minillada.common.atomic import atomic_folder, atomic_write_bytes, atomic_write_text


def test_a_file_is_replaced_whole_and_a_failed_write_leaves_the_old_one(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "t.txt", "old")
    atomic_write_bytes(path, b"new")
    assert path.read_text() == "new"

    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # fails inside the write
    assert path.read_text() == "new" and [p.name for p in path.parent.iterdir()] == ["t.txt"]


def test_a_folder_is_replaced_or_kept_and_a_failure_leaves_it_untouched(tmp_path):
    with atomic_folder(tmp_path / "f") as temporary:
        (temporary / "a").write_text("1")
    with atomic_folder(tmp_path / "f", replace=False) as temporary:  # another copy stands
        (temporary / "a").write_text("2")
    assert (tmp_path / "f" / "a").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "f") as temporary:
        (temporary / "a").write_text("3")
        raise RuntimeError("crash")
    assert (tmp_path / "f" / "a").read_text() == "1"
    with atomic_folder(tmp_path / "f") as temporary:
        (temporary / "b").write_text("4")
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
