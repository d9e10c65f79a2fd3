"""The sandbox, for real: child processes forked from the fork server, with their limits,
crashes, hangs, cancellation, and no process left behind.

The tasks that misbehave on purpose are functions of this module, run in the child as
"tests.unit.test_media_sandbox:function" (a child imports this module to find them)."""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from chatmedia.media.sandbox import (
    MediaFailed,
    Sandbox,
    SandboxBusy,
    SandboxLimits,
    pack,
    unpack,
)
from tests.media_files import MediaFiles, shared_media

pytestmark = pytest.mark.anyio

LIMITS = SandboxLimits(memory_bytes=1024**3, cpu_seconds=20, timeout=20.0)
IMAGE = {"content_type": "image/jpeg", "max_pixels": 32_000_000, "sizes": "320,800"}


def here(function: str) -> str:
    return f"{__name__}:{function}"


# Tasks run in the child.


def segfault(path: str) -> dict[str, Any]:
    os.kill(os.getpid(), signal.SIGSEGV)
    return {}


def spin(path: str) -> dict[str, Any]:
    while True:
        pass


def allocate(path: str, megabytes: int) -> dict[str, Any]:
    hog = bytearray(megabytes * 1024 * 1024)
    return {"length": len(hog)}


def raise_error(path: str) -> dict[str, Any]:
    raise KeyError(f"nothing at {path}")


def inspect_self(path: str) -> dict[str, Any]:
    limits = {
        name: resource.getrlimit(getattr(resource, name))
        for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE")
    }
    descriptors = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
            writable = fcntl.fcntl(int(fd), fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
        except OSError:
            continue  # the listing's own descriptor
        descriptors[fd] = [link, writable]
    return {"limits": limits, "nice": os.nice(0), "fds": descriptors, "pid": os.getpid()}


def die_mid_answer(path: str, how: str) -> dict[str, Any]:
    """Write the start of an answer to the result pipe, then die (or exit 0)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            is_pipe = fd > 2 and os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
        except OSError:
            continue
        if is_pipe and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
            os.write(fd, (1000).to_bytes(8, "big") + b'{"result": {"wid')
    if how == "exit":
        os._exit(0)
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def describe_watching_imports(path: str) -> dict[str, Any]:
    from chatmedia.media.images import describe_image

    before = set(sys.modules)
    described = describe_image(path, "image/jpeg")
    return {"imported": sorted(set(sys.modules) - before), "width": described["width"]}


def nap(path: str, seconds: str) -> dict[str, Any]:
    start = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process
    time.sleep(float(seconds))
    return {"start": start, "end": time.monotonic(), "blob": b"\x00\xff" * 1000}


# Fixtures and helpers.


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaFiles:
    return shared_media(tmp_path_factory)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(LIMITS, concurrency=2)
    yield box
    box.close()
    assert not decoding_children(), "a child outlived its task"


def decoding_children() -> list[tuple[int, str]]:
    """(pid, state) of every child of the fork server: children that outlived their task,
    zombies included."""
    server = [pid for pid, _, cmdline in _processes(os.getpid()) if b"forkserver" in cmdline]
    return [(pid, state) for parent in server for pid, state, _ in _processes(parent)]


def _processes(parent: int) -> list[tuple[int, str, bytes]]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent:
            found.append((int(entry), state, cmdline))
    return found


# The tests.


async def test_a_task_result_comes_back(sandbox: Sandbox, media: MediaFiles) -> None:
    found = await sandbox.run("image", str(media.photo(6)), **IMAGE)
    assert (found["width"], found["height"]) == (120, 80)  # stored 80x120, EXIF-turned
    assert [p["size"] for p in found["previews"]] == [320, 800]
    assert all(
        isinstance(p["data"], bytes) and p["data"][:2] == b"\xff\xd8" for p in found["previews"]
    )


async def test_the_child_runs_confined(sandbox: Sandbox, tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        mine = os.readlink(f"/proc/self/fd/{listener.fileno()}")
        found = await sandbox.run(here("inspect_self"), str(tmp_path))
    limits = found["limits"]
    assert limits["RLIMIT_AS"] == [LIMITS.memory_bytes] * 2
    assert limits["RLIMIT_CPU"] == [LIMITS.cpu_seconds, LIMITS.cpu_seconds + 1]
    assert limits["RLIMIT_FSIZE"] == [0, 0]
    assert limits["RLIMIT_NOFILE"] == [64, 64]
    assert limits["RLIMIT_CORE"] == [0, 0]
    assert found["nice"] >= 10
    assert mine.startswith("socket:")
    assert mine not in [link for link, _ in found["fds"].values()]  # no server socket
    pipes = [fd for fd, (link, writable) in found["fds"].items() if link.startswith("pipe:")]
    writable = [fd for fd in pipes if int(fd) > 2 and found["fds"][fd][1]]
    assert len(writable) == 1  # its answer pipe; not the fork server's or tracker's
    assert not Path(f"/proc/{found['pid']}").exists()


async def test_the_bomb_and_a_memory_hog_fail_and_the_next_task_works(
    sandbox: Sandbox, media: MediaFiles
) -> None:
    with pytest.raises(MediaFailed) as failed:
        await sandbox.run("image", str(media.bomb()), **IMAGE | {"content_type": "image/png"})
    assert failed.value.reason == "too_large"
    with pytest.raises(MediaFailed) as failed:
        await sandbox.run(here("allocate"), str(media.bomb()), megabytes=2048)
    assert failed.value.reason == "memory"
    assert str(failed.value) == "memory: the memory limit of 1024 MiB was reached"
    assert (await sandbox.run(here("allocate"), "", megabytes=100))["length"] == 100 * 2**20


async def test_a_decoder_that_overruns_the_memory_limit_fails(media: MediaFiles) -> None:
    tight = Sandbox(SandboxLimits(memory_bytes=512 * 2**20, cpu_seconds=20, timeout=20), 1)
    bomb = {"content_type": "image/png", "max_pixels": 10**9}
    try:
        with pytest.raises(MediaFailed) as failed:  # 144 megapixels, decoded then converted
            await tight.run("image", str(media.bomb(12_000)), **IMAGE | bomb)
        assert failed.value.reason == "memory"
        found = await tight.run("image", str(media.big_photo), **IMAGE)
        assert found["width"] == 3000
    finally:
        tight.close()


async def test_a_crash_fails_cleanly(sandbox: Sandbox) -> None:
    with pytest.raises(MediaFailed, match="crash: the decoder died of SIGSEGV"):
        await sandbox.run(here("segfault"), "")
    with pytest.raises(MediaFailed, match="crash: KeyError") as failed:
        await sandbox.run(here("raise_error"), "/srv/secret/blobs/ab/cd")
    assert "/srv/secret" not in str(failed.value)
    with pytest.raises(MediaFailed, match="no media task 'nothing'"):
        await sandbox.run("nothing", "")


async def test_failures_name_no_path(sandbox: Sandbox, media: MediaFiles, tmp_path: Path) -> None:
    damaged = media.corrupted(media.phone_video)
    with pytest.raises(MediaFailed) as failed:
        await sandbox.run("video", str(damaged), **IMAGE | {"content_type": "video/mp4"})
    assert failed.value.reason == "corrupt"
    assert str(media.folder) not in str(failed.value)


async def test_a_child_dying_mid_answer_fails_the_task(sandbox: Sandbox) -> None:
    with pytest.raises(MediaFailed, match="crash: the decoder died of SIGKILL"):
        await sandbox.run(here("die_mid_answer"), "", how="kill")
    with pytest.raises(MediaFailed, match="crash: the decoder's answer is malformed"):
        await sandbox.run(here("die_mid_answer"), "", how="exit")


async def test_a_hang_is_killed_at_the_timeout() -> None:
    quick = Sandbox(SandboxLimits(memory_bytes=1024**3, cpu_seconds=20, timeout=1.0), 1)
    try:
        started = time.monotonic()
        with pytest.raises(MediaFailed, match="timeout: no answer within 1 s"):
            await quick.run(here("spin"), "")
        assert time.monotonic() - started < 3
        assert not decoding_children()
    finally:
        quick.close()


async def test_the_cpu_limit_ends_a_busy_child() -> None:
    busy = Sandbox(SandboxLimits(memory_bytes=1024**3, cpu_seconds=1, timeout=20), 1)
    try:
        with pytest.raises(MediaFailed, match="timeout: the CPU limit of 1 s was reached"):
            await busy.run(here("spin"), "")
    finally:
        busy.close()


async def test_cancellation_kills_the_child(sandbox: Sandbox) -> None:
    with anyio.move_on_after(0.5) as scope:
        await sandbox.run(here("spin"), "")
    assert scope.cancelled_caught
    assert not decoding_children()


async def test_twenty_tasks_two_at_a_time(sandbox: Sandbox) -> None:
    results: list[dict[str, Any]] = []

    async def one() -> None:
        results.append(await sandbox.run(here("nap"), "", seconds="0.05"))

    async with anyio.create_task_group() as tasks:
        for _ in range(20):
            tasks.start_soon(one)
    assert len(results) == 20
    assert all(r["blob"] == b"\x00\xff" * 1000 for r in results)
    for result in results:  # when each began, at most one other was under way
        running = [r for r in results if r["start"] <= result["start"] < r["end"]]
        assert len(running) <= 2


async def test_a_task_waits_for_a_slot_only_as_long_as_it_may(sandbox: Sandbox) -> None:
    async with anyio.create_task_group() as tasks:
        for _ in range(2):  # both slots taken by short tasks (an upload's)
            tasks.start_soon(partial(sandbox.run, here("nap"), "", 5.0, seconds="1"))
        await anyio.sleep(0.3)
        assert sandbox.idle()  # a task would start as soon as one of them ends
        for _ in range(2):
            tasks.start_soon(partial(sandbox.run, here("nap"), "", 5.0, seconds="0"))
        await anyio.sleep(0.1)
        assert not sandbox.idle()  # as many wait as there are slots
        began = time.monotonic()
        with pytest.raises(SandboxBusy):
            await sandbox.run(here("nap"), "", 0.1, seconds="0")
        assert time.monotonic() - began < 0.5
    assert sandbox.idle()
    assert (await sandbox.run(here("nap"), "", 0.1, seconds="0"))["blob"]  # slots came back


async def test_a_job_in_the_sandbox_leaves_no_slot_to_wait_for(sandbox: Sandbox) -> None:
    # A job's task may run for seconds (a video): an upload does not wait behind one.
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(partial(sandbox.run, here("nap"), "", seconds="0.5"))
        tasks.start_soon(partial(sandbox.run, here("nap"), "", 5.0, seconds="0.5"))
        await anyio.sleep(0.2)
        assert not sandbox.idle()
    assert sandbox.idle()


async def test_a_closed_sandbox_refuses_tasks() -> None:
    box = Sandbox(LIMITS, 1)
    box.close()
    with pytest.raises(RuntimeError, match="closed"):
        await box.run("image", "")


async def test_children_start_with_the_decoders_warmed(sandbox: Sandbox, media: MediaFiles) -> None:
    # The fork server ran Pillow's JPEG path once: a child's photo imports nothing more.
    found = await sandbox.run(here("describe_watching_imports"), str(media.photo(6)))
    assert found == {"imported": [], "width": 120}


def test_the_server_side_modules_import_no_decoder() -> None:
    heavy = ("PIL", "av", "pypdfium2", "blurhash_rs")
    code = (
        "import sys, chatmedia.media.sandbox, chatmedia.media.header; "
        f"print([m for m in sys.modules if m.split('.')[0] in {heavy!r}])"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert loaded.stdout.strip() == b"[]"


def test_answers_are_json_and_bytes_never_pickles() -> None:
    value = {"a": [1, "two", None, b"\x00\x01", {"b": b""}], "c": 2.5}
    answer = pack(value)
    assert unpack(answer) == value
    with pytest.raises(TypeError):
        pack({"set": {1}})
    for malformed in (b"", answer[:9], (2).to_bytes(8, "big") + b"[]", answer[:-1]):
        with pytest.raises(ValueError):  # noqa: PT011 - several messages
            unpack(malformed)


PROBE_MAIN = """
import anyio
import probe_heavy
from chatmedia.media.sandbox import Sandbox, SandboxLimits

def task(path):
    return {}

async def main():
    box = Sandbox(SandboxLimits(), 1)
    for _ in range(3):
        await box.run("probe_main:task", "")
    box.close()

if __name__ == "__main__":
    anyio.run(main)
"""


def test_children_do_not_import_the_servers_main_module_again(tmp_path: Path) -> None:
    # What the main module run with -m imports (the server's: granian, the settings…) is
    # imported once by the fork server, not by every child.
    (tmp_path / "probe_main.py").write_text(PROBE_MAIN)
    marks = tmp_path / "imports"
    (tmp_path / "probe_heavy.py").write_text(
        f"import os\nwith open({str(marks)!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    subprocess.run(
        [sys.executable, "-m", "probe_main"], cwd=tmp_path, env=env, check=True, timeout=60
    )
    importers = marks.read_text().split()
    assert len(importers) == 2, importers  # the main process and the fork server
