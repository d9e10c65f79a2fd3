"""The sandbox: untrusted media is decoded in short-lived child processes, never in the
server process, so a decompression bomb or a crashing decoder costs one task.

Each task runs in a fresh process forked from a multiprocessing fork server that has
already imported the decoders (chatmedia.media.decode: Pillow, PyAV, PDFium, BlurHash),
so a task costs a fork rather than an interpreter start and these imports. The fork server
is a new interpreter, not a fork of the server: a child inherits none of the server's
sockets or open files, and it closes the pipes of multiprocessing's own plumbing it is
given. Before the task runs, the child lowers its own limits for good: address space
(RLIMIT_AS), CPU seconds, file size 0 (it writes no file), a few descriptors, no core
dump, a lower priority, and death with the fork server. (It still sees the server's
environment and may read what the server's user may: limits, not a jail.)

The answer comes back over a pipe as JSON followed by the bytes of the previews, never as
a pickle: the child handles hostile input, and nothing it says may run code in the server.
The parent reads the pipe without blocking the event loop, kills the child on timeout or
cancellation, and always collects its exit status (the fork server reaps it, so no zombie
is left); a child that dies halfway through its answer fails the task, it hangs nothing.

A task is a name of chatmedia.media.decode.TASKS, or "module:function" for a function of
another module (the tests' own tasks). Task names come from code, never from a request.

Failures are MediaFailed, whose `reason` is one of:

    crash        the decoder died (a signal such as SIGSEGV) or raised what it should not
    timeout      the wall-clock or CPU limit was reached
    memory       the address-space limit was reached
    unsupported  valid media of a kind not decoded
    corrupt      not valid media of its type, or truncated
    too_large    more pixels than allowed, refused before decoding
"""

from __future__ import annotations

import ctypes
import importlib
import json
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal, cast, get_args

import anyio
from anyio import to_thread

Reason = Literal["crash", "timeout", "memory", "unsupported", "corrupt", "too_large"]
REASONS: frozenset[str] = frozenset(get_args(Reason))

# What the fork server imports once, for every child to inherit (and see _preload).
PRELOAD = ["chatmedia.media.sandbox", "chatmedia.media.decode"]
# An answer is a few fields and previews of a few hundred kilobytes.
MAX_ANSWER = 32 * 1024 * 1024
MAX_DETAIL = 300  # characters of a failure's message
OPEN_FILES = 64
NICENESS = 10
# How long a killed child's exit status may take to come from the fork server.
REAP_TIMEOUT = 5.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """What one child may use; each default suits the previews of the decoders here."""

    memory_bytes: int = 1024**3  # RLIMIT_AS: a child with every decoder loaded maps ~160 MB
    cpu_seconds: int = 30  # RLIMIT_CPU: SIGXCPU then, SIGKILL a second later
    timeout: float = 30.0  # wall clock, then SIGKILL


class SandboxBusy(Exception):
    """No slot came free in time; the task was not run."""


class MediaFailed(Exception):
    """The media could not be described: the message says why (crash, timeout, memory,
    unsupported, corrupt, too_large), never with a path of the server or a secret."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail


class Sandbox:
    """Runs decoder tasks in limited child processes, at most `concurrency` at once."""

    def __init__(self, limits: SandboxLimits, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"a sandbox runs at least one task at once, not {concurrency}")
        self.limits = limits
        self._concurrency = concurrency
        self._slots = anyio.Semaphore(concurrency)
        # Tasks in `run` with no `start_within`, running or waiting for a slot.
        self._patient = 0
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(_preload())
        self._running: set[BaseProcess] = set()
        self._started = False
        self._closed = False

    async def run(
        self, task: str, path: str, start_within: float | None = None, **options: int | str
    ) -> dict[str, Any]:
        """Run `task(path, **options)` in a fresh child and return its result (JSON values
        and bytes); MediaFailed if there is none, RuntimeError once closed, SandboxBusy if
        no slot came free within `start_within` seconds (when given)."""
        if self._closed:
            raise RuntimeError("the sandbox is closed")
        patient = start_within is None
        self._patient += patient
        try:
            started = False
            with anyio.move_on_after(start_within):  # None: as long as it takes
                await self._slots.acquire()
                started = True
            if not started:
                raise SandboxBusy(f"no slot came free within {start_within} s")
            try:
                if not self._started:  # the first task starts the fork server: ~0.1 s
                    await to_thread.run_sync(multiprocessing.forkserver.ensure_running)
                    self._started = True
                return await self._run(task, path, options)
            finally:
                self._slots.release()
        finally:
            self._patient -= patient

    def idle(self) -> bool:
        """Whether a task would start at once, or soon: after the short tasks running now
        (none that may wait as long as it needs, such as a job's, is running or waiting),
        with no more waiting for a slot than there are slots."""
        waiting = self._slots.statistics().tasks_waiting
        soon = self._patient == 0 and waiting < self._concurrency
        return self._slots.value > 0 or soon

    def close(self) -> None:
        """Kill the children still running (their tasks fail) and refuse new tasks. The
        fork server ends with this process."""
        self._closed = True
        for child in list(self._running):
            child.kill()

    async def _run(self, task: str, path: str, options: dict[str, int | str]) -> dict[str, Any]:
        limits = self.limits
        reader, writer = self._context.Pipe(duplex=False)
        child = self._context.Process(
            target=_child,
            args=(writer, limits.memory_bytes, limits.cpu_seconds, task, path, options),
            name=f"chatmedia-media-{task}",
            daemon=True,
        )
        try:
            # Blocks for the fork (a few ms). Done here rather than in a thread, because
            # a start polls the other children, which must not race the loop's own polls.
            child.start()
        except BaseException:
            reader.close()
            raise
        finally:
            writer.close()  # the child's end: ours would hide the child's end of file
        self._running.add(child)
        try:
            with anyio.move_on_after(limits.timeout) as deadline:
                answer = await _read_to_end(reader)
                await anyio.wait_readable(child.sentinel)  # the exit status has come
            if deadline.cancelled_caught:
                raise MediaFailed("timeout", f"no answer within {limits.timeout:g} s")
        finally:
            reader.close()
            self._running.discard(child)
            exitcode = await _end(child)
        return _outcome(answer, exitcode, limits)


def _preload() -> list[str]:
    """PRELOAD, after the server's main module when it was run with -m (`chatmedia serve`
    runs chatmedia.server). multiprocessing runs that module again in every child it
    starts; once the fork server has imported it, everything it imports is there already,
    and a child spends no ~100 ms importing granian and the settings before its task. (A
    main script, run by path, is run again in each child all the same: the fork server of
    Python 3.11 never preloads one, "__main__" in its list notwithstanding.)"""
    name = getattr(getattr(sys.modules["__main__"], "__spec__", None), "name", None)
    if isinstance(name, str) and not name.endswith("__main__"):
        return [name, *PRELOAD]
    return PRELOAD


async def _read_to_end(reader: Connection) -> bytes:
    """All the child writes, until it closes the pipe (by exiting, or dying)."""
    fd = reader.fileno()
    os.set_blocking(fd, False)
    answer = bytearray()
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, 1024 * 1024)
        except BlockingIOError:
            continue
        if not chunk:
            return bytes(answer)
        answer += chunk
        if len(answer) > MAX_ANSWER:
            raise MediaFailed("crash", f"the answer is larger than {MAX_ANSWER} bytes")


async def _end(child: BaseProcess) -> int | None:
    """Kill the child if it still runs and collect its exit status, even when cancelled;
    the status (None if the fork server never gave it)."""
    with anyio.CancelScope(shield=True):
        if child.exitcode is None:
            child.kill()
            with anyio.move_on_after(REAP_TIMEOUT):
                await anyio.wait_readable(child.sentinel)
        exitcode = child.exitcode
    if exitcode is not None:
        child.close()  # releases the sentinel
    return exitcode


def _outcome(answer: bytes, exitcode: int | None, limits: SandboxLimits) -> dict[str, Any]:
    """The result of a finished child, or the MediaFailed that says why there is none."""
    if exitcode is not None and exitcode < 0:
        if -exitcode == signal.SIGXCPU:
            raise MediaFailed("timeout", f"the CPU limit of {limits.cpu_seconds} s was reached")
        raise MediaFailed("crash", f"the decoder died of {_signal_name(-exitcode)}")
    if exitcode != 0:
        raise MediaFailed("crash", f"the decoder exited with status {exitcode}")
    if not answer:
        raise MediaFailed("crash", "the decoder ended without an answer")
    try:
        said = unpack(answer)
    except ValueError as e:
        raise MediaFailed("crash", f"the decoder's answer is malformed: {e}") from None
    if isinstance(said.get("result"), dict):
        return cast(dict[str, Any], said["result"])
    failed = said.get("failed")
    if isinstance(failed, list) and len(failed) == 2 and failed[0] in REASONS:
        raise MediaFailed(failed[0], str(failed[1])[:MAX_DETAIL])
    raise MediaFailed("crash", "the decoder's answer is malformed")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# The answer's format: 8 bytes giving the JSON's length, the JSON, then the bytes values,
# each written in the JSON as {"$bytes": [offset, length]} into what follows it.


def pack(value: dict[str, Any]) -> bytes:
    """`value` (JSON values and bytes) as an answer; TypeError for anything else."""
    blobs: list[bytes] = []
    offset = 0

    def blob(item: object) -> object:
        nonlocal offset
        if not isinstance(item, bytes | bytearray | memoryview):
            raise TypeError(f"a {type(item).__name__} cannot be sent from the sandbox")
        blobs.append(bytes(item))
        offset += len(blobs[-1])
        return {"$bytes": [offset - len(blobs[-1]), len(blobs[-1])]}

    text = json.dumps(value, default=blob, allow_nan=False, separators=(",", ":")).encode()
    return b"".join([len(text).to_bytes(8, "big"), text, *blobs])


def unpack(answer: bytes) -> dict[str, Any]:
    """The dict an answer holds; ValueError if it is not a well-formed answer."""
    size = int.from_bytes(answer[:8], "big")
    if len(answer) < 8 or size > len(answer) - 8:
        raise ValueError("it stops short")
    data = memoryview(answer)[8 + size :]

    def blob(item: dict[str, Any]) -> object:
        if item.keys() != {"$bytes"}:
            return item
        match item["$bytes"]:
            case [int(start), int(length)] if 0 <= start <= start + length <= len(data):
                return bytes(data[start : start + length])
        raise ValueError("a bytes value lies outside the answer")

    said = json.loads(answer[8 : 8 + size], object_hook=blob)
    if not isinstance(said, dict):
        raise ValueError("it is not an object")
    return said


# What follows runs in the child.


def _child(
    writer: Connection, memory: int, cpu: int, task: str, path: str, options: dict[str, Any]
) -> None:
    """The child's whole life: confine itself, run the task, answer, exit."""
    try:
        _drop_plumbing()
        _confine(memory, cpu)
        answer = pack({"result": _task(task)(path, **options)})
    except BaseException as e:  # every failure becomes an answer
        reason = _reason(e)
        answer = pack({"failed": [reason, _detail(e, reason, path, memory)]})
    try:
        _write_all(writer.fileno(), answer)
    except OSError:
        os._exit(1)  # the parent is gone; there is nobody left to tell


def _drop_plumbing() -> None:
    """Close the write ends of multiprocessing's pipes a child inherits: through them a
    decoder gone rogue could end the fork server (its "alive" pipe) or give orders to
    the resource tracker. The child keeps only its answer pipe to write to."""
    from multiprocessing import forkserver, resource_tracker

    plumbing = (
        (getattr(forkserver, "_forkserver", None), "_forkserver_alive_fd"),
        (getattr(resource_tracker, "_resource_tracker", None), "_fd"),
    )
    for holder, name in plumbing:
        fd = getattr(holder, name, None)
        if isinstance(fd, int):
            os.close(fd)
            setattr(holder, name, None)


def _confine(memory: int, cpu: int) -> None:
    _lower(resource.RLIMIT_AS, memory)
    _lower(resource.RLIMIT_CPU, cpu, hard=cpu + 1)  # SIGXCPU, then SIGKILL a second later
    _lower(resource.RLIMIT_FSIZE, 0)
    _lower(resource.RLIMIT_NOFILE, OPEN_FILES)
    _lower(resource.RLIMIT_CORE, 0)
    os.nice(NICENESS)
    if sys.platform == "linux":  # die with the fork server, which dies with the server
        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)


def _lower(limit: int, soft: int, hard: int | None = None) -> None:
    """Set a limit the child cannot raise again (never above the current hard limit)."""
    _, current = resource.getrlimit(limit)
    hard = soft if hard is None else hard
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(limit, (soft, hard))


def _task(task: str) -> Callable[..., dict[str, Any]]:
    module, _, name = task.partition(":")
    if name:
        return cast(Callable[..., dict[str, Any]], getattr(importlib.import_module(module), name))
    from chatmedia.media.decode import TASKS  # preloaded in the fork server

    if task not in TASKS:
        raise ValueError(f"there is no media task {task!r}")
    return TASKS[task]


def _reason(error: BaseException) -> Reason:
    from chatmedia.media.stills import DecodeError

    if isinstance(error, DecodeError) and error.reason in REASONS:
        return cast(Reason, error.reason)
    return "memory" if isinstance(error, MemoryError) else "crash"


def _detail(error: BaseException, reason: Reason, path: str, memory: int) -> str:
    """What went wrong, in words that name no path of the server."""
    if reason == "memory":
        return f"the memory limit of {memory // 2**20} MiB was reached"
    text = str(error) or type(error).__name__
    if reason == "crash":
        text = f"{type(error).__name__}: {text}"
    for secret in (path, os.path.dirname(path)):
        if len(secret) > 1:
            text = text.replace(secret, "<file>")
    return text[:MAX_DETAIL]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
