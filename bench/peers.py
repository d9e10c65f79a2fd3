"""The servers compared: chatmedia, nginx and Synapse's media repository, each started on
127.0.0.1 in a temporary folder and stopped (its whole process group) on the way out.

Each is wrapped in a `Peer`: how to store a file, where to download it from, how it takes
an upload, and which processes to count for memory and CPU time. The workloads only talk to
this interface.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import httpx

from client import Body, Response, multipart_file, request
from common import (
    START_TIMEOUT,
    descendants,
    free_port,
    running_server,
    start_process,
    stop,
    wait_http,
    worker_pids,
)
from tools import NGINX

MAX_UPLOAD = "1GiB"  # every peer's upload limit: well above the 256 MiB of W1 and W4


@dataclass(frozen=True, slots=True)
class Stored:
    """A file a peer holds: where to GET it (`range_path` for Range requests, when it
    differs) and what to delete it by."""

    download_path: str
    ref: str
    size: int
    sha256: str
    range_path: str = ""

    @property
    def ranges_from(self) -> str:
        """Where W5 sends its Range requests."""
        return self.range_path or self.download_path


@dataclass(frozen=True, slots=True)
class UploadSpec:
    """How a peer takes an upload. `path` holds `{n}` where each upload needs a name of its
    own (nginx's PUT); `multipart` wraps the bytes in a form's `file` part."""

    method: str
    path: str
    multipart: bool
    content_type: str | None
    ok_statuses: frozenset[int]


class Peer(Protocol):
    """A server under test, as the workloads see it."""

    name: str
    address: tuple[str, int]
    auth: Mapping[str, str]  # headers that downloads carry
    upload_auth: Mapping[str, str]  # headers that uploads carry
    upload_spec: UploadSpec
    honours_range: bool

    def memory_pids(self) -> list[int]:
        """The processes whose resident memory is the peer's memory."""
        ...

    def cpu_pids(self) -> list[int]:
        """Every process of the peer, for CPU time."""
        ...

    def upload(self, path: Path, sha256: str) -> Stored:
        """Store the file at `path` (whose SHA-256 is given) and check what the peer says."""
        ...

    def delete(self, stored: Stored) -> None:
        """Remove a stored file."""
        ...

    def stored_count(self) -> int:
        """How many files the peer holds now."""
        ...


def upload_body(spec: UploadSpec, path: Path) -> tuple[dict[str, str], Body]:
    """The headers and body of an upload of `path` as `spec` says."""
    if spec.multipart:
        boundary = secrets.token_hex(16)
        content_type = f"multipart/form-data; boundary={boundary}"
        return {"Content-Type": content_type}, multipart_file(path, boundary, path.name)
    headers = {"Content-Type": spec.content_type} if spec.content_type else {}
    return headers, Body(path=path)


def send_upload(peer: Peer, path: Path) -> Response:
    """POST or PUT `path` to the peer, as its upload spec says; the raw response."""
    headers, body = upload_body(peer.upload_spec, path)
    target = peer.upload_spec.path.replace("{n}", f"{path.name}-{secrets.token_hex(8)}")
    response = request(
        peer.address, peer.upload_spec.method, target, {**peer.upload_auth, **headers}, body
    )
    response.extra["target"] = target
    if response.status not in peer.upload_spec.ok_statuses:
        raise RuntimeError(
            f"{peer.name}: upload answered {response.status}: {response.body[:300]!r}"
        )
    return response


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(1024 * 1024):
            digest.update(piece)
    return digest.hexdigest()


# --- chatmedia ------------------------------------------------------------------------------


@dataclass
class Chatmedia:
    """chatmedia's native API: uploads to /v1/files, downloads from /v1/files/{id}/content
    with the key. With `keyless`, downloads use the file-engine URL that needs no key; with
    `signed`, the File's signed `url`, which needs none either."""

    server_pid: int
    data_dir: Path
    address: tuple[str, int]
    key: str
    keyless: bool = False
    signed: bool = False
    name: str = "chatmedia"
    honours_range: bool = True
    upload_spec: UploadSpec = field(
        default_factory=lambda: UploadSpec("POST", "/v1/files", True, None, frozenset({201}))
    )
    # An nginx in front of it (its master process), whose CPU counts as the server's too.
    front_pid: int | None = None
    # Processes beside it that do part of its work (a clamd): their CPU counts too.
    helper_pids: tuple[int, ...] = ()

    @property
    def auth(self) -> Mapping[str, str]:
        """The API key header, unless downloads go through the key-less URL."""
        return {} if self.keyless or self.signed else self.upload_auth

    @property
    def upload_auth(self) -> Mapping[str, str]:
        """The API key header."""
        return {"Authorization": f"Bearer {self.key}"}

    def memory_pids(self) -> list[int]:
        """The granian worker(s): the process that serves requests."""
        return worker_pids(self.server_pid)

    def cpu_pids(self) -> list[int]:
        """The main granian process and its workers (and the nginx in front and the
        helpers, if any)."""
        front = [] if self.front_pid is None else [self.front_pid, *descendants(self.front_pid)]
        return [self.server_pid, *descendants(self.server_pid), *front, *self.helper_pids]

    def upload(self, path: Path, sha256: str) -> Stored:
        """POST /v1/files; checks the size and SHA-256 the server reports."""
        record = send_upload(self, path).json()
        size = path.stat().st_size
        if record["sha256"] != sha256 or record["size"] != size:
            raise RuntimeError(f"chatmedia stored something else: {record}")
        if self.keyless:
            target = f"/file-engine/api/downloadFileStream?filename={quote(record['storedName'])}"
        elif self.signed:
            target = "/" + record["url"].split("/", 3)[3]  # its path and signed query
        else:
            target = f"/v1/files/{record['id']}/content"
        return Stored(target, record["id"], size, sha256)

    def delete(self, stored: Stored) -> None:
        """DELETE /v1/files/{id}."""
        response = request(self.address, "DELETE", f"/v1/files/{stored.ref}", self.upload_auth)
        if response.status != 204:
            raise RuntimeError(f"chatmedia: delete answered {response.status}")

    def stored_count(self) -> int:
        """Files the API lists (whatever the database)."""
        count, cursor = 0, ""
        while True:
            target = "/v1/files?limit=1000" + (f"&cursor={quote(cursor)}" if cursor else "")
            response = request(self.address, "GET", target, self.upload_auth)
            page = response.json()
            count += len(page["items"])
            cursor = page["nextCursor"]
            if not cursor:
                return count


@contextmanager
def chatmedia(
    workdir: Path,
    workers: int | None,
    source: Path | None = None,
    settings: Mapping[str, str] | None = None,
) -> Iterator[Chatmedia]:
    """A `chatmedia serve` with a 1 GiB upload limit (running `source`'s code when given;
    `settings` are more CHATMEDIA_* variables, such as the backends')."""
    with running_server(workdir, MAX_UPLOAD, workers, source, settings) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        yield Chatmedia(server.process.pid, server.data_dir, ("127.0.0.1", port), server.key)


ACCEL_PREFIX = "/internal-blobs/"
ACCEL_CONF = """\
# nginx in front of chatmedia with CHATMEDIA_ACCEL_REDIRECT, as docs/deploy.md sets it up:
# chatmedia checks every request, nginx sends the file (sendfile). Tuned as NGINX_CONF.
{user}worker_processes auto;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_max_body_size 1g;
    client_body_temp_path {root}/body-temp;
    proxy_temp_path {root}/proxy-temp;
    fastcgi_temp_path {root}/fastcgi-temp;
    uwsgi_temp_path {root}/uwsgi-temp;
    scgi_temp_path {root}/scgi-temp;
    upstream chatmedia {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://chatmedia;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_request_buffering off;
            proxy_buffering off;
        }}
        location {prefix} {{
            internal;
            alias {blobs}/;
            etag off;
            if_modified_since off;
            add_header ETag $upstream_http_etag always;
            add_header Content-Security-Policy $upstream_http_content_security_policy always;
            add_header X-Content-Type-Options $upstream_http_x_content_type_options always;
        }}
    }}
}}
"""


@contextmanager
def chatmedia_accel(
    workdir: Path,
    workers: int | None,
    source: Path | None = None,
    settings: Mapping[str, str] | None = None,
) -> Iterator[Chatmedia]:
    """A second chatmedia (local blobs) with CHATMEDIA_ACCEL_REDIRECT behind its own nginx,
    reached through nginx: the optional offload for whole-file downloads."""
    root = workdir / "accel"
    root.mkdir()
    accel = dict(settings or {}) | {"CHATMEDIA_ACCEL_REDIRECT": ACCEL_PREFIX}
    with running_server(root, MAX_UPLOAD, workers, source, accel) as server:
        port = free_port()
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
        conf = root / "nginx.conf"
        upstream = server.base_url.removeprefix("http://")
        blobs = server.data_dir / "blobs"
        conf.write_text(ACCEL_CONF.format(user=user, root=root, port=port, upstream=upstream,
                                          prefix=ACCEL_PREFIX, blobs=blobs))  # fmt: skip
        log = root / "nginx.log"
        command = [str(NGINX), "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
        process = start_process(command, root, None, log)
        try:
            wait_http(process, f"http://127.0.0.1:{port}/healthz", log, time.monotonic() + 10)
            yield Chatmedia(
                server.process.pid, server.data_dir, ("127.0.0.1", port), server.key,
                name="chatmedia-accel", front_pid=process.pid,
            )  # fmt: skip
        finally:
            stop(process)


# --- nginx ----------------------------------------------------------------------------------

NGINX_CONF = """\
# The ceiling: nginx serving files with sendfile and taking PUTs with its WebDAV module.
{user}worker_processes auto;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    default_type application/octet-stream;
    # Request bodies go to a temporary file on the same disk as the files, then are renamed
    # into place: no copy. nginx neither fsyncs nor hashes them.
    client_body_temp_path {root}/body-temp;
    client_max_body_size 1g;
    client_body_buffer_size 128k;
    proxy_temp_path {root}/proxy-temp;
    fastcgi_temp_path {root}/fastcgi-temp;
    uwsgi_temp_path {root}/uwsgi-temp;
    scgi_temp_path {root}/scgi-temp;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root}/www;
        location /files/ {{ }}
        # The same files for Range requests (W5). With tcp_nopush (TCP_CORK), a 64 KiB range
        # at an offset that is not a multiple of the page size waits ~40 ms for the client's
        # delayed ACK before its last segment leaves; without it nginx answers in ~1 ms.
        location /ranges/ {{
            alias {root}/www/files/;
            tcp_nopush off;
        }}
        location /up/ {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw;
        }}
        location = /healthz {{ return 200 "ok"; }}
    }}
}}
"""


@dataclass
class Nginx:
    """nginx: GET /files/<name> (static, sendfile), PUT /up/<name> (WebDAV)."""

    master_pid: int
    root: Path
    address: tuple[str, int]
    name: str = "nginx"
    auth: Mapping[str, str] = field(default_factory=dict)
    upload_auth: Mapping[str, str] = field(default_factory=dict)
    honours_range: bool = True
    upload_spec: UploadSpec = field(
        default_factory=lambda: UploadSpec(
            "PUT", "/up/{n}", False, "application/octet-stream", frozenset({201, 204})
        )
    )

    def memory_pids(self) -> list[int]:
        """The worker processes."""
        return descendants(self.master_pid)

    def cpu_pids(self) -> list[int]:
        """The master and its workers."""
        return [self.master_pid, *descendants(self.master_pid)]

    def upload(self, path: Path, sha256: str) -> Stored:
        """PUT /up/<name>, then serve it from /files/ (same folder as a static file)."""
        target = send_upload(self, path).extra["target"]
        name = target.removeprefix("/up/")
        stored = self.root / "www" / "up" / name
        (self.root / "www" / "files").mkdir(exist_ok=True)
        os.replace(stored, self.root / "www" / "files" / name)
        return Stored(f"/files/{name}", name, path.stat().st_size, sha256, f"/ranges/{name}")

    def delete(self, stored: Stored) -> None:
        """Remove the file (directly: nginx holds no state about it)."""
        for folder in ("files", "up"):
            (self.root / "www" / folder / stored.ref).unlink(missing_ok=True)

    def stored_count(self) -> int:
        """Files under /up/."""
        up = self.root / "www" / "up"
        return sum(1 for _ in up.iterdir()) if up.is_dir() else 0


@contextmanager
def nginx(workdir: Path) -> Iterator[Nginx]:
    """An nginx on 127.0.0.1 with its own configuration, folders and pid file."""
    root = workdir / "nginx"
    (root / "www" / "up").mkdir(parents=True)
    (root / "www" / "files").mkdir(parents=True)
    port = free_port()
    # As root, nginx's workers would switch to `nobody`, which may not enter our temporary
    # folder: they run as the user running the benchmark instead.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, root=root, port=port))
    log = root / "stdout.log"
    command = [str(NGINX), "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
    process = start_process(command, root, None, log)
    try:
        wait_http(process, f"http://127.0.0.1:{port}/healthz", log, time.monotonic() + 10)
        yield Nginx(process.pid, root, ("127.0.0.1", port))
    finally:
        stop(process)


# --- Synapse --------------------------------------------------------------------------------

SYNAPSE_USER = "bench"
SYNAPSE_START_TIMEOUT = 120.0


def synapse_overrides(port: int, data: Path, log_config: Path | None) -> dict[str, object]:
    """What the benchmark changes in Synapse's generated configuration (a later config file
    overrides an earlier one key by key; JSON is YAML). Without `log_config`, the generated
    logging (INFO, every request) stays."""
    unlimited = {"per_second": 1_000_000, "burst_count": 1_000_000}
    logging = {"log_config": str(log_config)} if log_config is not None else {}
    return logging | {
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(data / "homeserver.db")}},
        "media_store_path": str(data / "media_store"),
        "max_upload_size": "1G",
        "url_preview_enabled": False,
        "enable_media_repo": True,
        "enable_authenticated_media": True,
        "dynamic_thumbnails": False,
        "presence": {"enabled": False},
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "report_stats": False,
        "enable_metrics": False,
        "rc_message": unlimited,
        "rc_registration": unlimited,
        "rc_login": {"address": unlimited, "account": unlimited, "failed_attempts": unlimited},
        "rc_admin_redaction": unlimited,
        "rc_joins": {"local": unlimited, "remote": unlimited},
        "rc_joins_per_room": unlimited,
        "rc_3pid_validation": unlimited,
        "rc_invites": {"per_room": unlimited, "per_user": unlimited, "per_issuer": unlimited},
        "rc_third_party_invite": unlimited,
        "rc_media_create": unlimited,
        "rc_federation": {"window_size": 1000, "sleep_limit": 100000, "reject_limit": 100000},
        "rc_key_requests": unlimited,
        "rc_presence": {"per_user": unlimited},
        "rc_delayed_event_mgmt": unlimited,
        "rc_room_creation": unlimited,
        "rc_reports": unlimited,
        "rc_user_directory": unlimited,
        "rc_profile": unlimited,
    }


# Warnings and errors only: Synapse logs every request at INFO, which would cost it time
# that chatmedia (which logs no access lines by default) does not spend.
SYNAPSE_LOG_CONFIG = """\
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {path}
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
"""


@dataclass
class Synapse:
    """Synapse's media repository: POST /_matrix/media/v3/upload, GET the authenticated
    /_matrix/client/v1/media/download/localhost/<id>."""

    pid: int
    data: Path
    address: tuple[str, int]
    token: str
    name: str = "synapse"
    honours_range: bool = False  # measured at setup (see workloads.probe_range)
    upload_spec: UploadSpec = field(
        default_factory=lambda: UploadSpec(
            "POST",
            "/_matrix/media/v3/upload?filename=upload.bin",
            False,
            "application/octet-stream",
            frozenset({200}),
        )
    )

    @property
    def auth(self) -> Mapping[str, str]:
        """The access token header."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def upload_auth(self) -> Mapping[str, str]:
        """The access token header."""
        return self.auth

    def memory_pids(self) -> list[int]:
        """Synapse is one process."""
        return [self.pid]

    def cpu_pids(self) -> list[int]:
        """The process (and any child, though Synapse starts none)."""
        return [self.pid, *descendants(self.pid)]

    def upload(self, path: Path, sha256: str) -> Stored:
        """POST the bytes; Synapse answers with an mxc:// URI."""
        uri = send_upload(self, path).json()["content_uri"]
        server, media_id = uri.removeprefix("mxc://").split("/", 1)
        target = f"/_matrix/client/v1/media/download/{server}/{media_id}"
        return Stored(target, media_id, path.stat().st_size, sha256)

    def delete(self, stored: Stored) -> None:
        """The admin API's media deletion."""
        target = f"/_synapse/admin/v1/media/localhost/{stored.ref}"
        response = request(self.address, "DELETE", target, self.auth)
        if response.status != 200:
            raise RuntimeError(f"synapse: delete answered {response.status}: {response.body!r}")

    def stored_count(self) -> int:
        """Rows in local_media_repository."""
        return _sqlite_count(self.data / "homeserver.db", "local_media_repository")


@contextmanager
def synapse(
    workdir: Path,
    python: Path,
    info_logs: bool = False,
    config: Mapping[str, object] | None = None,
) -> Iterator[Synapse]:
    """A Synapse homeserver `localhost` on SQLite, rate limits off, 1 GiB uploads, with an
    admin user whose access token the benchmark uses. Logging is cut to warnings unless
    `info_logs` (Synapse's generated default: a line per request). `config` holds more
    top-level keys of its configuration (bench/media.py's thumbnail sizes)."""
    root = workdir / "synapse"
    data = root / "data"
    data.mkdir(parents=True)
    port = free_port()
    generated = root / "homeserver.yaml"
    _synapse_tool(
        python,
        "-m",
        "synapse.app.homeserver",
        "--server-name",
        "localhost",
        "--config-path",
        str(generated),
        "--data-directory",
        str(data),
        "--generate-config",
        "--report-stats=no",
        cwd=root,
    )
    log_config = None if info_logs else root / "log.yaml"
    if log_config is not None:
        log_config.write_text(SYNAPSE_LOG_CONFIG.format(path=root / "homeserver.log"))
    overrides = root / "bench.yaml"
    chosen = synapse_overrides(port, data, log_config) | dict(config or {})
    overrides.write_text(json.dumps(chosen, indent=2))
    command = [str(python), "-m", "synapse.app.homeserver", "-c", str(generated)]
    command += ["-c", str(overrides)]
    log = root / "stdout.log"
    process = start_process(command, root, os.environ | {"PYTHONUNBUFFERED": "1"}, log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SYNAPSE_START_TIMEOUT
        wait_http(process, f"{base}/health", log, deadline)
        password = secrets.token_hex(16)
        register = python.parent / "register_new_matrix_user"
        _synapse_tool(
            register,
            "--user",
            SYNAPSE_USER,
            "--password",
            password,
            "--admin",
            "--config",
            str(generated),
            base,
            cwd=root,
        )
        token = _synapse_login(base, password)
        yield Synapse(process.pid, data, ("127.0.0.1", port), token)
    finally:
        stop(process)


def _synapse_tool(executable: Path, *args: str, cwd: Path) -> None:
    done = subprocess.run(
        [str(executable), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT * 4,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{executable.name} {args[:3]} failed:\n{done.stdout}{done.stderr}")


def _synapse_login(base: str, password: str) -> str:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": SYNAPSE_USER},
        "password": password,
    }
    response = httpx.post(f"{base}/_matrix/client/v3/login", json=body, timeout=30)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


# --- helpers --------------------------------------------------------------------------------


def _sqlite_count(database: Path, table: str) -> int:
    """`SELECT count(*)` on a live SQLite database (WAL: readers do not block writers)."""
    if not table.isidentifier():
        raise ValueError(table)
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as conn:
        (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    return int(count)
