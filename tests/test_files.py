"""nanolib.files: atomic writes that leave nothing half-written, JSON errors, one sha256."""

from __future__ import annotations

import hashlib

import pytest

from nanolib.files import atomic_write, atomic_write_json, read_json, replace_dir, sha256_file


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temp file left


def test_json_round_trip_and_a_corrupt_file_is_named(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert read_json(tmp_path / "m.json") == {"a": [1, 2], "b": 1}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.json: corrupt JSON"):
        read_json(tmp_path / "bad.json")


def test_sha256_and_replace_dir(tmp_path):
    data = bytes(range(256)) * 5000  # more than one read chunk
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    final, new = tmp_path / "d", tmp_path / "new"
    final.mkdir()
    (final / "old").write_text("1")
    new.mkdir()
    (new / "fresh").write_text("2")
    replace_dir(new, final)
    assert [p.name for p in final.iterdir()] == ["fresh"] and not new.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".d.old")]
