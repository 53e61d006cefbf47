"""Extracting a call's error from log.json: only what the call appended, last error wins, garbage tolerated.

The sample lines are the formats seen from the real binaries on this machine (runc/crun newline-terminated,
runsc objects glued together without a newline).
"""

from __future__ import annotations

import os

import pytest

from runtime import logjson
from runtime.logjson import LogCursor, last_error_in

RUNC_ERR = '{"level":"error","msg":"container does not exist","time":"2024-01-02T03:04:05Z"}\n'
RUNC_WARN = '{"level":"warning","msg":"deprecated","time":"2024-01-02T03:04:05Z"}\n'
CRUN_ERR = ('{"msg":"error opening file `/r/c1/status`: No such file or directory","level":"error",'
            '"time":"2026-11-29T05:34:00.932525Z"}\n')
RUNSC_ERR = '{"msg":"loading container: file does not exist","level":"error","time":"2026-11-29T05:34:00.97Z"}'


def _append(path, text):
    with open(path, "a") as f:
        f.write(text)


def test_missing_file_means_no_error(tmp_path):
    cur = LogCursor.at_end(str(tmp_path / "log.json"))
    assert cur.offset == 0
    assert cur.last_error() is None


def test_file_created_by_the_call(tmp_path):
    path = str(tmp_path / "log.json")
    cur = LogCursor.at_end(path)
    _append(path, RUNC_WARN + RUNC_ERR)
    assert cur.last_error() == "container does not exist"


def test_stale_errors_before_the_cursor_are_ignored(tmp_path):
    path = str(tmp_path / "log.json")
    _append(path, RUNC_ERR)
    cur = LogCursor.at_end(path)
    assert cur.offset == len(RUNC_ERR)
    assert cur.last_error() is None           # nothing appended by "this call"
    _append(path, RUNC_WARN)
    assert cur.last_error() is None           # appended, but not an error
    _append(path, '{"level":"error","msg":"  container not running \\n","time":"x"}\n')
    assert cur.last_error() == "container not running"


def test_last_error_wins(tmp_path):
    path = str(tmp_path / "log.json")
    cur = LogCursor.at_end(path)
    _append(path, RUNC_ERR + CRUN_ERR + RUNC_WARN)
    assert cur.last_error() == "error opening file `/r/c1/status`: No such file or directory"


def test_runsc_objects_without_newlines(tmp_path):
    path = str(tmp_path / "log.json")
    _append(path, RUNSC_ERR)
    cur = LogCursor.at_end(path)
    _append(path, '{"msg":"starting","level":"info","time":"t"}' + RUNSC_ERR.replace("loading", "reloading"))
    assert cur.last_error() == "reloading container: file does not exist"


def test_garbage_and_partial_lines_are_skipped():
    text = ("not json at all\n" + RUNC_ERR + "{\"level\":\"error\",\"msg\":\"trunc" + "\n" + "]]}}{{\n"
            + '["level","error"]\n' + '{"level":"error","msg":42}\n' + '{"level":"fatal","msg":"boom"}\n'
            + '{"level":"error","msg":"half')
    assert last_error_in(text) == "boom"
    assert last_error_in("\x00\xff garbage {") is None
    assert last_error_in("") is None


def test_invalid_utf8_is_tolerated(tmp_path):
    path = tmp_path / "log.json"
    cur = LogCursor.at_end(str(path))
    path.write_bytes(b'\xff\xfe\n{"level":"error","msg":"caf\xc3\xa9 \xff","time":"t"}\n')
    assert cur.last_error() == "caf\u00e9 \ufffd"


def test_truncated_or_replaced_file_is_read_from_the_start(tmp_path):
    path = str(tmp_path / "log.json")
    _append(path, RUNC_WARN * 3)
    cur = LogCursor.at_end(path)
    with open(path, "w") as f:                # truncated and rewritten, shorter than the old offset
        f.write(RUNC_ERR)
    assert cur.last_error() == "container does not exist"
    _append(path, RUNC_WARN * 5)
    cur = LogCursor.at_end(path)
    # replaced by a longer file whose error lies before the old offset: the inode tells it is new
    (tmp_path / "new").write_text(CRUN_ERR + RUNC_WARN * 5)
    os.replace(str(tmp_path / "new"), path)
    assert cur.last_error() == "error opening file `/r/c1/status`: No such file or directory"


def test_scan_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(logjson, "MAX_SCAN", 4096)
    path = str(tmp_path / "log.json")
    cur = LogCursor.at_end(path)
    _append(path, RUNC_ERR + RUNC_WARN * 200 + CRUN_ERR)
    assert cur.last_error() == "error opening file `/r/c1/status`: No such file or directory"
    cur = LogCursor.at_end(path)
    _append(path, CRUN_ERR + RUNC_WARN * 200)  # the only error is older than the newest MAX_SCAN bytes
    assert cur.last_error() is None


def test_unreadable_log_raises(tmp_path):
    path = tmp_path / "log.json"
    cur = LogCursor.at_end(str(path))
    path.mkdir()                              # exists but cannot be read as a file
    with pytest.raises(OSError):
        cur.last_error()
