"""nginx in front of a chatmedia node, as docs/deploy.md configures it for
CHATMEDIA_ACCEL_REDIRECT: on 127.0.0.1 in a temp folder, proxying to the node and serving
its blobs from an internal location. Debian's nginx (`make test` installs it when
missing); a missing one fails the tests, never a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ACCEL_PREFIX = "/internal-blobs/"
CONFIG = """\
{user}worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 20m;
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
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


def _nginx() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        pytest.fail("nginx is not installed: `make test` installs it (apt-get install nginx)")
    return found


@contextmanager
def running_nginx(root: Path, port: int, upstream: str, blobs: Path) -> Iterator[str]:
    """nginx on 127.0.0.1:`port` in front of `upstream`; yields its base URL."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "nginx.conf"
    # As root, nginx's workers would run as nobody, who cannot read the node's private
    # data folder: they run as the node's user instead, as in a deployment.
    user = "user root;\n" if os.geteuid() == 0 else ""
    config.write_text(CONFIG.format(user=user, root=root, port=port, upstream=upstream,
                                    prefix=ACCEL_PREFIX, blobs=blobs))  # fmt: skip
    with (root / "out.log").open("wb") as log:
        process = subprocess.Popen(
            [_nginx(), "-c", str(config), "-p", str(root)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, (root / "error.log").read_text()
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
