"""The classification table: runtime error text -> domain error (containerd's checkKillError rules, ``pkg/process/utils.go`` at v1.6.20),
plus the per-runtime patterns of the built-in configs, using messages the real binaries printed on this machine."""

from __future__ import annotations

import pytest

from runtime import builtin
from runtime.errors import (
    AlreadyExists,
    ContainerNotFound,
    ProcessFinished,
    RuntimeFailed,
    classify,
    failure_message,
)


def _classify_for(cfg, op, detail, output=""):
    return classify(op, detail, 1, output=output, finished=cfg.finished_patterns,
                    not_found=cfg.not_found_patterns, exists=cfg.exists_patterns)


@pytest.mark.parametrize(("detail", "kind", "message"), [
    ("container not running", ProcessFinished, "process already finished"),
    ("Container Not Running", ProcessFinished, "process already finished"),
    ("os: process already finished", ProcessFinished, "process already finished"),
    ("kill: No such process", ProcessFinished, "process already finished"),
    ("NO SUCH PROCESS", ProcessFinished, "process already finished"),
    ("errno ESRCH", ProcessFinished, "process already finished"),
    ("container does not exist", ContainerNotFound, "no such container"),
    # finished wins over not-found when both appear (containerd checks it first)
    ("container not running; state dir does not exist", ProcessFinished, "process already finished"),
    ("permission denied", RuntimeFailed, "unknown error after kill: permission denied"),
    ("RESEARCH failed", RuntimeFailed, "unknown error after kill: RESEARCH failed"),  # ESRCH only as a word
])
def test_kill_classification(detail, kind, message):
    err = classify("kill", detail, 1)
    assert type(err) is kind
    assert (err.op, str(err)) == ("kill", message)


@pytest.mark.parametrize(("op", "detail", "kind", "message"), [
    ("delete", "container does not exist", ContainerNotFound, "failed to delete task: container does not exist"),
    ("start", "container does not exist", ContainerNotFound, "OCI runtime start failed: container does not exist"),
    ("pause", "container not running", RuntimeFailed, "OCI runtime pause failed: container not running"),
    ("create", "container with given ID already exists", AlreadyExists,
     "OCI runtime create failed: container with given ID already exists"),
    # for create a "does not exist" is about a file, not the container
    ("create", "open /b/config.json: file does not exist", RuntimeFailed,
     "OCI runtime create failed: open /b/config.json: file does not exist"),
    ("restore", "container already exists", AlreadyExists, "OCI runtime restore failed: container already exists"),
    ("exec", 'exec: "nosuch": executable file not found in $PATH', RuntimeFailed,
     'OCI runtime exec failed: exec: "nosuch": executable file not found in $PATH'),
    ("resume", "x", RuntimeFailed, "OCI runtime resume failed: x"),
    ("update", "x", RuntimeFailed, "OCI runtime update failed: x"),
    ("ps", "x", RuntimeFailed, "OCI runtime ps failed: x"),
    ("checkpoint", "x", RuntimeFailed, "OCI runtime checkpoint failed: x"),
])
def test_other_operations(op, detail, kind, message):
    err = classify(op, detail, 1)
    assert type(err) is kind
    assert (err.op, str(err)) == (op, message)


def test_runtime_failed_keeps_exit_status():
    err = classify("start", "boom", 128)
    assert isinstance(err, RuntimeFailed) and err.status == 128


def test_patterns_also_match_captured_output():
    err = classify("kill", "runc did not terminate successfully: exit status 1", 1, output="container not running")
    assert isinstance(err, ProcessFinished)


@pytest.mark.parametrize(("cfg", "op", "detail", "kind"), [
    # crun 1.8.1, unknown id
    (builtin.CRUN, "kill", "error opening file `/r/ns/c1/status`: No such file or directory", ContainerNotFound),
    (builtin.CRUN, "delete", "cannot open directory '/r/ns/c1': No such file or directory", ContainerNotFound),
    (builtin.CRUN, "exec", "open `/bin/nosuch`: No such file or directory", RuntimeFailed),
    # the same crun text means nothing special to runc's config
    (builtin.RUNC, "kill", "error opening file `/r/ns/c1/status`: No such file or directory", RuntimeFailed),
    # runsc 20221219
    (builtin.RUNSC, "kill", "loading container: file does not exist", ContainerNotFound),
    (builtin.RUNSC, "delete", 'loading container "c1": file does not exist', ContainerNotFound),
    (builtin.RUNSC, "kill", "connecting to control server at PID 9695: connection refused", ProcessFinished),
    (builtin.RUNSC, "kill", "sandbox is not running", ProcessFinished),
    (builtin.RUNSC, "kill", 'cannot signal container "c1" in state created', RuntimeFailed),
    (builtin.RUNC, "kill", "connecting to control server at PID 9695: connection refused", RuntimeFailed),
    # runc 1.1.5
    (builtin.RUNC, "kill", "container not running", ProcessFinished),
    (builtin.RUNC, "state", "container does not exist", ContainerNotFound),
])
def test_builtin_runtime_messages(cfg, op, detail, kind):
    assert type(_classify_for(cfg, op, detail)) is kind


def test_failure_message_for_an_unlisted_operation():
    assert failure_message("events", "x") == "OCI runtime events failed: x"
