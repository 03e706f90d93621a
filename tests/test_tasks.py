"""The stage mechanism's file signatures: size, mtime and content hash of input files."""

from __future__ import annotations

import os

from glacierfacies import tasks
from glacierfacies.tasks import file_signature


def test_signature_has_size_mtime_and_hash_of_small_files(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("bb")
    (tmp_path / "d" / "a.txt").write_text("a")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 100)
    monkeypatch.setattr(tasks, "HASH_BELOW_BYTES", 50)
    sig = file_signature([tmp_path / "d", big], root=tmp_path)
    assert [e["path"] for e in sig] == ["d/a.txt", "d/b.txt", "big.bin"]
    assert sig[0]["bytes"] == 1 and "sha256" in sig[0] and "mtime_ns" in sig[0]
    assert "sha256" not in sig[2]  # over the limit: size and mtime only
    assert "sha256" in file_signature([big], always_hash=True)[0]  # e.g. the label table
    before = file_signature([big])
    os.utime(big, ns=(1, 1))  # touched, same content
    assert file_signature([big]) != before
    assert file_signature([tmp_path / "missing"])[0]["missing"]
