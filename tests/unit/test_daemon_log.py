"""shim/daemon_log.py: where a record goes (its task's FIFO, fd 2, or every task FIFO when fd 2 is unread), that
writing never blocks, and the logfmt lines themselves.

Everything that touches fd 2 runs in a child Python (``scenario``): the child makes its own fd 2 (a pipe or a
FIFO with a reader it holds), real FIFOs for the tasks, logs, and prints what each reader got as JSON on stdout.
The test runner's own fd 2 is never touched. A write that blocks is killed by the child's alarm.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shim.daemon_log import LogfmtFormatter

REPO = Path(__file__).resolve().parents[2]

PRELUDE = r"""
import fcntl, json, logging, os, signal, sys, time
sys.stderr = open(os.dup(2), "w", buffering=1)  # the child's own failures reach the test; fd 2 is the scenario's
signal.alarm(10)                                 # a write that blocks kills the child
from shim.daemon_log import LogfmtFormatter, TaskLogs, current_task, setup_logging
from shim.flags import ShimFlags

BASE = os.getcwd()

def fifo(name):
    '''A bundle with its log FIFO, and our (non-blocking) read end.'''
    os.makedirs(os.path.join(BASE, name))
    path = os.path.join(BASE, name, "log")
    os.mkfifo(path)
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)

def bundle(name):
    return os.path.join(BASE, name)

def drain(fd):
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        out += chunk
    return out.decode()

def pipe_as_fd2():
    '''fd 2 becomes a non-blocking pipe; returns its read end.'''
    r, w = os.pipe()
    os.dup2(w, 2)
    os.close(w)
    os.set_blocking(2, False)
    os.set_blocking(r, False)
    return r

def fill(name):
    '''Fill a FIFO up with "x" through a writer of our own; how many bytes it took.'''
    w = os.open(os.path.join(BASE, name, "log"), os.O_WRONLY | os.O_NONBLOCK)
    n = 0
    for size in (65536, 1):
        while True:
            try:
                n += os.write(w, b"x" * size)
            except BlockingIOError:
                break
    os.close(w)
    return n

def handler(default_id="first"):
    h = TaskLogs()
    h.setFormatter(LogfmtFormatter({"namespace": "ns"}, default_id=default_id))
    root = logging.getLogger()
    root.handlers[:] = [h]
    root.setLevel(logging.INFO)
    return h

def daemon(runtime="rt"):
    '''A daemon started by task "first": fd 2 is b0's FIFO (setup_logging); (our read end of it, the handler).'''
    first = fifo("b0")
    os.chdir(bundle("b0"))
    return first, setup_logging(ShimFlags(namespace="ns", id="first"), runtime)

def task(h, task_id, name):
    '''A task whose Create came: its FIFO made, opened by the handler; our read end.'''
    r = fifo(name)
    h.open(task_id, bundle(name))
    return r

def log_as(task, msg, *args):
    token = current_task.set(task)
    try:
        logging.getLogger("scenario").info(msg, *args)
    finally:
        current_task.reset(token)

out = {}
"""


def scenario(tmp_path: Path, body: str) -> dict:
    """Run ``body`` after PRELUDE in a child Python (cwd ``tmp_path``); the ``out`` dict it filled."""
    code = PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, timeout=30, check=False,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), stdin=subprocess.DEVNULL)
    assert done.returncode == 0, (done.returncode, done.stderr.decode())
    return json.loads(done.stdout)


LINE = re.compile(r'time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z" level=(\w+) msg="((?:[^"\\]|\\.)*)"(.*) id="([^"]*)"')


def records(text: str) -> list[tuple[str, str, str]]:
    """(level, msg, id) of each line; every line must be one whole logfmt record ending in a newline."""
    assert text == "" or text.endswith("\n"), text[-200:]
    out = []
    for line in text.splitlines():
        m = LINE.fullmatch(line)
        assert m is not None and line.count('Z" level=') == 1, line[:300]  # one record, not two glued
        out.append((m[1], m[2], m[4]))
    return out


# -- routing -------------------------------------------------------------------------------------------------

def test_records_go_to_their_tasks_fifo_and_those_of_no_task_to_fd_2(tmp_path: Path) -> None:
    out = scenario(tmp_path, """
        first, h = daemon("io.containerd.test.v1")
        t1, t2 = task(h, "t1", "b1"), task(h, "t2", "b2")
        h.open("t1", bundle("b2"))                  # already open: a no-op
        log_as("t1", "one")
        log_as("t2", "two")
        log_as("", "daemon says %s", "hi")
        log_as("t1", "one again")
        out.update(fd2=drain(first), t1=drain(t1), t2=drain(t2), fd2_blocking=os.get_blocking(2),
                   pid=os.getpid(), handlers=[type(x).__name__ for x in logging.getLogger().handlers])
    """)
    assert records(out["t1"]) == [("info", "one", "t1"), ("info", "one again", "t1")]
    assert records(out["t2"]) == [("info", "two", "t2")]
    assert records(out["fd2"]) == [("info", "daemon says hi", "first")]
    assert f' namespace="ns" pid="{out["pid"]}" runtime="io.containerd.test.v1" id="first"\n' in out["fd2"]
    assert out["fd2_blocking"] is False and out["handlers"] == ["TaskLogs"]


def test_a_task_without_a_fifo_logs_to_fd_2_under_its_own_id(tmp_path: Path) -> None:
    out = scenario(tmp_path, """
        fd2 = pipe_as_fd2()
        os.makedirs(bundle("nofifo"))
        h = handler()
        h.open("t3", bundle("nofifo"))              # started by hand: no log FIFO, nothing opened
        log_as("t3", "three")
        out.update(fd2=drain(fd2))
    """)
    assert records(out["fd2"]) == [("info", "three", "t3")]


def test_after_delete_a_tasks_records_no_longer_reach_its_fifo(tmp_path: Path) -> None:
    out = scenario(tmp_path, """
        fd2 = pipe_as_fd2()
        h = handler()
        t1 = task(h, "t1", "b1")
        log_as("t1", "before")
        h.close_task("t1")
        h.close_task("t1")                          # twice: harmless
        log_as("t1", "after")
        out.update(t1=drain(t1), fd2=drain(fd2))
    """)
    assert records(out["t1"]) == [("info", "before", "t1")]
    assert records(out["fd2"]) == [("info", "after", "t1")]


def test_with_fd_2_unread_a_record_of_no_task_goes_to_every_task_fifo(tmp_path: Path) -> None:
    out = scenario(tmp_path, """
        first, h = daemon()
        t1, t2 = task(h, "t1", "b1"), task(h, "t2", "b2")
        log_as("", "while first is read")
        out["fd2"] = drain(first)
        os.close(first)                             # the first task is gone: nobody reads fd 2 any more
        log_as("", "daemon trouble")
        log_as("t1", "mine")
        log_as("t3", "of a task without a FIFO")    # not broadcast: it is no record of the daemon's
        out.update(t1=drain(t1), t2=drain(t2))
    """)
    assert records(out["fd2"]) == [("info", "while first is read", "first")]
    t1, t2 = records(out["t1"]), records(out["t2"])  # (which id a record of no task carries is not pinned here)
    assert [r[1] for r in t1] == ["daemon trouble", "mine"] and t1[1] == ("info", "mine", "t1")
    assert [r[1] for r in t2] == ["daemon trouble"]


# -- never blocking ------------------------------------------------------------------------------------------

def test_a_full_fifo_never_blocks_and_gets_no_part_of_the_line(tmp_path: Path) -> None:
    out = scenario(tmp_path, """
        fd2 = pipe_as_fd2()
        h = handler()
        t1 = task(h, "t1", "b1")
        filled = fill("b1")
        started = time.monotonic()
        for i in range(100):
            log_as("t1", "line %d", i)
        os.close(fd2)                               # fd 2 unread too: the broadcast must not block either
        log_as("", "daemon line")
        out.update(elapsed=time.monotonic() - started, filled=filled, t1=drain(t1))
    """)
    assert out["elapsed"] < 2.0
    assert out["filled"] > 0 and out["t1"] == "x" * out["filled"]  # nothing appended, not even part of a line


def test_a_line_longer_than_the_room_left_in_a_fifo_is_not_cut(tmp_path: Path) -> None:
    """A FIFO with room for less than the line (here: one free page of two, a 10 kB traceback) must get no part of
    a line: a cut line has no newline, and containerd's line reader glues the next record to it. (Whole records
    only: the long one dropped, or sent as records short enough to be written at once.)"""
    out = scenario(tmp_path, """
        h = handler()
        t1 = task(h, "t1", "b1")
        fcntl.fcntl(t1, fcntl.F_SETPIPE_SZ, 8192)
        w = os.open(os.path.join(bundle("b1"), "log"), os.O_WRONLY | os.O_NONBLOCK)
        os.write(w, b"x" * 4096)                  # one page of two in use
        os.close(w)
        log_as("t1", "y" * 10000)
        out["head"] = os.read(t1, 4096).decode()  # containerd reads on: room again
        log_as("t1", "next")
        out["t1"] = drain(t1)
    """)
    assert out["head"] == "x" * 4096
    got = records(out["t1"])                    # every line one whole record
    assert got[-1] == ("info", "next", "t1")
    assert all(level == "info" and msg.startswith("yyyy") and task == "t1" for level, msg, task in got[:-1])


# -- the lines -------------------------------------------------------------------------------------------------

def record(msg: str, level: int = logging.INFO, created: float = 1700000000.25, **extra) -> logging.LogRecord:
    r = logging.LogRecord("shim", level, __file__, 1, msg, (), None)
    r.created = created
    r.__dict__.update(extra)
    return r


def test_logfmt_line_fields_and_order() -> None:
    f = LogfmtFormatter({"namespace": "k8s.io", "pid": "42", "runtime": "", "x": 'a"b'}, default_id="first")
    assert f.format(record("started")) == ('time="2023-11-14T22:13:20.250000000Z" level=info msg="started" '
                                           'namespace="k8s.io" pid="42" x="a\\"b" id="first"')
    assert f.format(record("w", logging.WARNING, task_id="t9")).endswith(' id="t9"')
    assert ' level=warning ' in f.format(record("w", logging.WARNING))
    assert ' level=error ' in f.format(record("e", logging.ERROR))
    assert ' level=debug ' in f.format(record("d", logging.DEBUG))
    assert LogfmtFormatter({}).format(record("m")).endswith('msg="m" id=""')


@pytest.mark.parametrize("msg, quoted", [
    ('say "hi"', r'"say \"hi\""'),
    ("two\nlines", r'"two\nlines"'),
    ("back\\slash", r'"back\\slash"'),
    ('\\"\n', r'"\\\"\n"'),
])
def test_msg_is_quoted_on_one_line(msg: str, quoted: str) -> None:
    line = LogfmtFormatter({}).format(record(msg))
    assert f" msg={quoted} " in line and "\n" not in line


def test_a_traceback_is_part_of_the_one_line_msg() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        r = record("failed")
        r.exc_info = sys.exc_info()
    line = LogfmtFormatter({}, default_id="c").format(r)
    assert "\n" not in line and line.startswith('time="') and line.endswith(' id="c"')
    assert 'msg="failed\\nTraceback (most recent call last):\\n' in line and "ValueError: boom" in line
