"""History files read in chunks: a file cut short while it is read says so."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import pytest

from bench.synthlog import write_log
from gateway.history import CHUNK, SHRUNK, UNENDED, History, Skip


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_a_file_truncated_while_it_is_read_ends_with_a_skip_saying_so(tmp_path: Path, compress: bool) -> None:
    """logrotate's copytruncate empties a log the import is reading: what was read stays, and
    the summary says the rest was not read (it used to end as if the file were complete, or
    blame the gzip data)."""
    log = write_log(tmp_path / "access.log", 3 * CHUNK, compress=compress)
    history = History(log, lambda number, raw: [])
    try:
        first = history.raw_lines()
        assert len(first) == CHUNK
        os.truncate(log, 100)
        rest: list[tuple[int, bytes] | Skip] = []
        while more := history.raw_lines():
            rest += more
    finally:
        history.close()
    assert isinstance(rest[-1], Skip) and rest[-1].reason == SHRUNK, rest[-3:]
    assert len(first) + len(rest) < 3 * CHUNK
    assert sum(isinstance(entry, Skip) and entry.reason == SHRUNK for entry in rest) == 1


def test_a_file_read_whole_or_a_truncated_gzip_copy_is_not_called_cut_short(tmp_path: Path) -> None:
    """A gzip copy cut short on disk is broken, not being truncated: every line before the break
    comes out, then gzip's error (the import ends there, naming the file)."""
    log = write_log(tmp_path / "access.log", CHUNK + 10)
    cut = tmp_path / "cut.log.gz"
    data = gzip.compress(log.read_bytes())
    cut.write_bytes(data[: len(data) // 2])
    for path in (log, cut):
        history = History(path, lambda number, raw: [])
        entries: list[tuple[int, bytes] | Skip] = []
        try:
            while more := history.raw_lines():
                entries += more
        except EOFError:
            assert path == cut
            with pytest.raises(EOFError):
                history.raw_lines()  # and again, should it be asked
        finally:
            history.close()
        assert not any(isinstance(entry, Skip) for entry in entries), path
        readable = zlib.decompressobj(wbits=31).decompress(data[: len(data) // 2]).count(b"\n")
        assert len(entries) == (CHUNK + 10 if path == log else readable)


def test_a_log_caught_mid_line_is_read_no_further_than_that_line(tmp_path: Path) -> None:
    """The writer finishes the line the import found half written: its rest, read on as a line
    of its own, numbered every line after it one more than the next import does (the numbers
    key the event IDs), so each of them was imported twice."""
    log = tmp_path / "access.log"
    log.write_bytes(b"one\ntwo\nthr")
    history = History(log, lambda number, raw: [])
    try:
        assert history.raw_lines() == [(1, b"one"), (2, b"two"), Skip(3, UNENDED)]
        with log.open("ab") as writer:
            writer.write(b"ee\nfour\n")
        assert history.raw_lines() == []
        assert history.lines == 3
    finally:
        history.close()
    again = History(log, lambda number, raw: [])
    try:
        assert again.raw_lines() == [(1, b"one"), (2, b"two"), (3, b"three"), (4, b"four")]
    finally:
        again.close()
