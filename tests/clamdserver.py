"""A real clamd for the tests: Debian's clamav-daemon (`make test` installs it when missing;
a missing one fails the tests, never a skip) on 127.0.0.1 and a Unix socket in a temp
folder, with a signature database of its own, since none can be downloaded here.

The database holds the EICAR test file (by its MD5, in a `.hdb`) and body signatures for
marker strings (`.ndb` lines). The markers live in an unsigned `daily.cud` container built
here (the format `sigtool --unsigned --build` writes): clamd's VERSION reports the version
of a database named `daily.*` only, so that a test, like a real deployment fed by
freshclam, sees VERSION change when the signatures change. Loose `.ndb` files, as an
operator adds their own signatures, leave VERSION as it was.

ClamAV appends ".UNOFFICIAL" to the name of every signature it did not sign itself.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import signal
import socket
import struct
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MARKER = b"CHATMEDIA-TEST-MARKER"
EICAR_SIGNATURE = "Chatmedia-Test-Eicar.UNOFFICIAL"
MARKER_SIGNATURE = "Chatmedia-Test-Marker.UNOFFICIAL"
START_TIMEOUT = 30.0
# A free port chosen here may be taken by another process before clamd binds it.
_ATTEMPTS = 3
# The functionality level a database asks of the engine: any clamd has it.
_FLEVEL = 1
CONFIG = """\
Foreground yes
LocalSocket {root}/clamd.sock
TCPSocket {port}
TCPAddr 127.0.0.1
DatabaseDirectory {root}/db
TemporaryDirectory {root}/tmp
PidFile {root}/clamd.pid
LogFile {root}/clamd.log
LogTime yes
LogSyslog no
StreamMaxLength {max_stream}
AlertExceedsMax yes
ScanArchive yes
ConcurrentDatabaseReload yes
"""


def _clamd() -> str:
    found = shutil.which("clamd") or (
        "/usr/sbin/clamd" if Path("/usr/sbin/clamd").exists() else None
    )
    if found is None:
        pytest.fail(
            "clamd is not installed: `make test` installs it (apt-get install clamav-daemon)"
        )
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ask(address: str | tuple[str, int], request: bytes, timeout: float = 5.0) -> str:
    """clamd's reply to `request` (a whole z-command) at a Unix path or a TCP address."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        s.sendall(request)
        reply = b""
        while not reply.endswith(b"\0"):
            data = s.recv(4096)
            if not data:
                break
            reply += data
    return reply.rstrip(b"\0").decode(errors="replace")


def write_daily_cud(path: Path, version: int, ndb_lines: list[str]) -> None:
    """An unsigned ClamAV database container (`.cud`) of `version` holding `ndb_lines` as
    daily.ndb: a 512-byte header, then a gzipped tar of the files and a daily.info listing
    them with their SHA-256. Written whole, then moved in place."""
    ndb = "".join(line + "\n" for line in ndb_lines).encode()
    now = datetime.now(UTC)
    fields = f"{now:%d %b %Y %H-%M %z}:{version}:{len(ndb_lines)}:{_FLEVEL}"
    stime = int(now.timestamp())
    info = (
        f"ClamAV-VDB:{fields}:X:X:chatmedia-tests:{stime}\n"
        f"daily.ndb:{len(ndb)}:{hashlib.sha256(ndb).hexdigest()}\n"
    ).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in (("daily.info", info), ("daily.ndb", ndb)):
            member = tarfile.TarInfo(name)
            member.size, member.mtime = len(data), stime
            tar.addfile(member, io.BytesIO(data))
    body = gzip.compress(archive.getvalue(), mtime=stime)
    md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
    header = f"ClamAV-VDB:{fields}:{md5}:X:chatmedia-tests:{stime}".encode()
    staged = path.with_suffix(".tmp")
    staged.write_bytes(header.ljust(512, b" ") + body)
    staged.replace(path)


class ClamdServer:
    """A clamd running over `root`, on the same port and socket across restarts."""

    def __init__(self, root: Path, max_stream: int, port: int) -> None:
        self.root = root
        self.port = port
        self.socket_path = root / "clamd.sock"
        self.tcp_url = f"tcp://127.0.0.1:{port}"
        self.unix_url = f"unix://{self.socket_path}"
        # The version of daily.cud, as VERSION reports it; add_signature raises it.
        self.database_version = 1
        self.start_seconds = 0.0  # how long the last start took
        self._ndb = [_ndb_line("Chatmedia-Test-Marker", MARKER)]
        self._last = ("Chatmedia-Test-Marker", MARKER)
        self._process: subprocess.Popen[bytes] | None = None
        db = root / "db"
        for folder in (db, root / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        # No `User` line: clamd then runs as whoever starts it (root included: it neither
        # refuses nor drops privileges), and can read this folder.
        (root / "clamd.conf").write_text(CONFIG.format(root=root, port=port, max_stream=max_stream))
        md5 = hashlib.md5(EICAR, usedforsecurity=False).hexdigest()
        (db / "chatmedia-tests.hdb").write_text(f"{md5}:{len(EICAR)}:Chatmedia-Test-Eicar\n")
        write_daily_cud(db / "daily.cud", self.database_version, self._ndb)

    def start(self) -> None:
        """Start clamd and wait until it answers PING on both sockets."""
        assert self._process is None, "clamd is already running"
        began = time.monotonic()
        with (self.root / "out.log").open("ab") as log:
            self._process = subprocess.Popen(
                [_clamd(), "-c", str(self.root / "clamd.conf"), "--foreground"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = began + START_TIMEOUT
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop(kill=True)
                raise ClamdDidNotStart(self.log()[-3000:])
            time.sleep(0.02)
        self.start_seconds = time.monotonic() - began

    def stop(self, *, kill: bool = False) -> None:
        """Stop clamd: SIGTERM (its clean shutdown), or SIGKILL with `kill`."""
        process, self._process = self._process, None
        if process is None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def running(self) -> bool:
        """Whether clamd was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def pause(self) -> None:
        """SIGSTOP: clamd still accepts connections (the kernel does) but never answers."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def add_signature(self, name: str, marker: bytes, *, versioned: bool = True) -> None:
        """A body signature `name` for `marker`, seen by clamd after reload(). `versioned`
        puts it in daily.cud and raises database_version, as a freshclam update does;
        otherwise it goes to a loose local.ndb, which VERSION does not reflect."""
        assert ":" not in name, "an .ndb signature name has no colon"
        assert marker, "an empty marker would match everything"
        line = _ndb_line(name, marker)
        self._last = (name, marker)
        if versioned:
            self._ndb.append(line)
            self.database_version += 1
            write_daily_cud(self.root / "db" / "daily.cud", self.database_version, self._ndb)
        else:
            with (self.root / "db" / "local.ndb").open("a") as ndb:
                ndb.write(line + "\n")

    def reload(self) -> None:
        """RELOAD, then wait until clamd reports the database version and detects the
        signature added last: it reloads in the background, scanning with the old
        signatures meanwhile."""
        assert self.ask(b"zRELOAD\0") == "RELOADING"
        name, marker = self._last
        expected = f"stream: {name}.UNOFFICIAL FOUND"
        deadline = time.monotonic() + START_TIMEOUT
        while not (
            f"/{self.database_version}/" in self.ask(b"zVERSION\0")
            and self.ask(_instream(marker)) == expected
        ):
            assert time.monotonic() < deadline, f"clamd did not reload: {self.log()[-2000:]}"
            time.sleep(0.02)

    def ask(self, request: bytes) -> str:
        """clamd's reply to a z-command, over the Unix socket."""
        return _ask(str(self.socket_path), request)

    def log(self) -> str:
        """clamd's log and output."""
        return "".join(
            path.read_text(errors="replace")
            for path in (self.root / "clamd.log", self.root / "out.log")
            if path.exists()
        )

    def _answers(self) -> bool:
        try:
            return all(
                _ask(address, b"zPING\0", timeout=1) == "PONG"
                for address in (str(self.socket_path), ("127.0.0.1", self.port))
            )
        except OSError:
            return False


class ClamdDidNotStart(Exception):
    """clamd exited or did not answer in time; the message is the end of its log."""


def _ndb_line(name: str, marker: bytes) -> str:
    return f"{name}:0:*:{marker.hex()}"  # any file type, anywhere in the content


def _instream(data: bytes) -> bytes:
    return b"zINSTREAM\0" + struct.pack(">I", len(data)) + data + bytes(4)


@contextmanager
def running_clamd(root: Path, *, max_stream: int = 10 * 1024 * 1024) -> Iterator[ClamdServer]:
    """clamd over `root` (which must make a short enough Unix socket path), refusing
    content larger than `max_stream` bytes; stopped at the end."""
    root.mkdir(parents=True, exist_ok=True)
    if len(str(root / "clamd.sock")) > 100:
        pytest.fail(f"{root} is too long a folder for a Unix socket")
    _clamd()
    error: ClamdDidNotStart | None = None
    for _ in range(_ATTEMPTS):
        server = ClamdServer(root, max_stream, _free_port())
        try:
            server.start()
        except ClamdDidNotStart as e:
            error = e
            continue
        try:
            yield server
        finally:
            server.stop()
        return
    pytest.fail(f"clamd did not start ({_ATTEMPTS} attempts): {error}")
