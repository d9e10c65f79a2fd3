"""Downloads handed to nginx (CHATMEDIA_ACCEL_REDIRECT): after every check chatmedia
answers with X-Accel-Redirect and nginx sends the bytes with sendfile, Range included;
304 and refusals stay chatmedia's own."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import png_bytes
from tests.e2e.conftest import Server, free_port
from tests.nginxserver import ACCEL_PREFIX, running_nginx

pytestmark = pytest.mark.e2e
DATA = bytes(range(256)) * 400  # 102,400 bytes


@pytest.fixture(scope="module")
def fronted(
    start_server: Callable[..., Server], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str]]:
    server = start_server(accel_redirect=ACCEL_PREFIX)
    root = tmp_path_factory.mktemp("nginx")
    with running_nginx(root, free_port(), server.url, server.data_dir / "blobs") as url:
        yield server, url


def test_nginx_sends_the_bytes_with_our_headers(fronted: tuple[Server, str]) -> None:
    server, url = fronted
    with httpx.Client(base_url=url, headers=server.auth, timeout=30) as client:
        file = client.post("/v1/files", files={"file": ("a.bin", DATA)}).json()
        path = f"/v1/files/{file['id']}/content"
        whole = client.get(path)
        assert whole.status_code == 200
        assert whole.content == DATA
        assert whole.headers["etag"] == f'"{file["sha256"]}"'
        assert whole.headers["content-security-policy"] == "sandbox"
        assert whole.headers["x-content-type-options"] == "nosniff"
        assert whole.headers["content-disposition"].startswith("attachment")
        assert whole.headers["server"].startswith("nginx")  # the bytes came from nginx
        part = client.get(path, headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206
        assert part.content == DATA[1000:2000]
        assert part.headers["content-range"] == f"bytes 1000-1999/{len(DATA)}"
        head = client.head(path)
        assert (head.status_code, head.headers["content-length"]) == (200, str(len(DATA)))
        # Conditional requests and If-Range are still answered by chatmedia itself.
        etag = {"If-None-Match": whole.headers["etag"]}
        assert client.get(path, headers=etag).status_code == 304
        resumed = client.get(path, headers={"Range": "bytes=5-9", "If-Range": '"other"'})
        assert (resumed.status_code, resumed.content) == (200, DATA)
        # What the node refuses, nginx never serves.
        assert client.get(path, headers={"Authorization": "Bearer cm_nope"}).status_code == 401
        assert client.delete(f"/v1/files/{file['id']}").status_code == 204
        assert client.get(path).status_code == 404


def test_the_blobs_are_not_reachable_from_outside(fronted: tuple[Server, str]) -> None:
    server, url = fronted
    with httpx.Client(base_url=url, headers=server.auth, timeout=30) as client:
        file = client.post("/v1/files", files={"file": ("a.png", png_bytes())}).json()
        sha = file["sha256"]
        direct = client.get(f"{ACCEL_PREFIX}{sha[:2]}/{sha[2:4]}/{sha}")
        assert direct.status_code == 404  # an internal location: only a redirect reaches it
        # A signed link goes the same way.
        assert httpx.get(file["url"].replace(server.url, url)).content == png_bytes()
