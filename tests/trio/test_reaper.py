"""The reaper and the launcher on real child processes."""
import os
import signal

import trio

from shim.reaper import Reaper, ReaperLauncher, exit_status


async def _with_reaper(fn):
    reaper = Reaper()
    async with trio.open_nursery() as nursery:
        await nursery.start(reaper.run)
        try:
            return await fn(reaper, ReaperLauncher(reaper))
        finally:
            nursery.cancel_scope.cancel()


async def test_run_captures_output_and_status():
    async def body(reaper, launcher):
        res = await launcher.run(["/bin/sh", "-c", "echo out; echo err >&2; exit 7"])
        assert res.status == 7
        assert res.output == b"out\nerr\n"
    with trio.fail_after(10):
        await _with_reaper(body)


async def test_run_in_a_cwd_and_the_daemon_stays_where_it_was(tmp_path):
    """Runtime calls run in their container's bundle (runtime/oci_cli.py): a wrapper such as runc-fp reads
    ./config.json; the daemon's own cwd is left as it was, even when that directory was deleted."""
    here = tmp_path / "daemon-cwd"
    here.mkdir()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    old = os.open(".", os.O_PATH)
    os.chdir(here)
    try:
        here.rmdir()  # a shared daemon's cwd is the first container's bundle, deleted with it

        async def body(reaper, launcher):
            res = await launcher.run(["/bin/sh", "-c", "pwd"], cwd=str(bundle))
            assert (res.status, res.output) == (0, f"{bundle}\n".encode())
        with trio.fail_after(10):
            await _with_reaper(body)
        assert os.readlink("/proc/self/cwd") == f"{here} (deleted)"
    finally:
        os.fchdir(old)
        os.close(old)


async def test_run_feeds_stdin_bytes():
    async def body(reaper, launcher):
        data = b"x" * 300_000  # more than a pipe buffer
        res = await launcher.run(["/bin/sh", "-c", "wc -c"], stdin=data)
        assert res.status == 0 and res.output.strip() == b"300000"
    with trio.fail_after(10):
        await _with_reaper(body)


async def test_run_returns_when_a_leftover_child_keeps_stdout_open():
    """runsc start leaves a gofer holding its stdout: the call ends at the command's exit, with its output."""
    async def body(reaper, launcher):
        res = await launcher.run(["/bin/sh", "-c", "sleep 30 & echo $!; echo done"])
        lingering = int(res.output.split()[0])
        try:
            assert res.status == 0 and res.output.endswith(b"done\n")
            os.kill(lingering, 0)  # still alive, still holding the capture file
        finally:
            os.kill(lingering, signal.SIGKILL)
    with trio.fail_after(5):
        await _with_reaper(body)


async def test_run_does_not_wait_for_unread_stdin():
    async def body(reaper, launcher):
        res = await launcher.run(["/bin/true"], stdin=b"x" * 1_000_000)
        assert res.status == 0 and res.output == b""
    with trio.fail_after(5):
        await _with_reaper(body)


async def test_signal_exit_is_128_plus_signal():
    async def body(reaper, launcher):
        res = await launcher.run(["/bin/sh", "-c", "kill -TERM $$"])
        assert res.status == 128 + signal.SIGTERM
    with trio.fail_after(10):
        await _with_reaper(body)
    assert exit_status(signal.SIGKILL) == 137  # a raw wait status killed by SIGKILL


async def test_cancelled_run_kills_the_child():
    async def body(reaper, launcher):
        with reaper.subscribe() as sub:
            with trio.move_on_after(0.3):
                await launcher.run(["/bin/sleep", "30"])
            ex = await sub.next()  # the sleep was terminated and reaped
            assert ex.status == 128 + signal.SIGTERM
    with trio.fail_after(10):
        await _with_reaper(body)


async def test_cancelled_run_stops_the_commands_whole_process_group(tmp_path):
    """A child the command forked would survive a TERM to the command alone (sh exits, sleep goes on)."""
    pidfile = tmp_path / "child"

    async def body(reaper, launcher):
        with trio.move_on_after(0.5):
            await launcher.run(["/bin/sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"])
        child = int(pidfile.read_text())
        with trio.fail_after(5):
            while os.path.exists(f"/proc/{child}") and process_state(child) != "Z":
                await trio.sleep(0.02)
    with trio.fail_after(10):
        await _with_reaper(body)


def process_state(pid: int) -> str:
    """The state letter of ``pid`` in /proc (R, S, Z...), "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


async def test_subscription_keeps_an_exit_reaped_before_the_lookup():
    async def body(reaper, launcher):
        with reaper.subscribe() as sub:
            res = await launcher.run(["/bin/true"])
            assert sub.reaped(res.pid) is not None  # early-exit race: the exit is kept for later lookup
    with trio.fail_after(10):
        await _with_reaper(body)


async def test_spawn_passes_fds_and_keeps_only_its_exit(tmp_path):
    async def body(reaper, launcher):
        r, w = os.pipe()
        try:
            child = await launcher.spawn(["/bin/sh", "-c", "echo hi >&3"], env={}, extra_fds=[w])
            os.close(w)
            w = -1
            await launcher.run(["/bin/true"])  # another exit must not pile up in the child's subscription
            assert await child.wait() == 0
            assert [e.pid for e in child._sub._exits] == [child.pid]
            assert os.read(r, 100) == b"hi\n"
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
    with trio.fail_after(10):
        await _with_reaper(body)
