"""Import from URL through a real `chatmedia serve` process."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Server
from tests.sources import CLIENT_ID, CLIENT_SECRET, D360_KEY, PNG, Listener, SourceServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def source() -> Iterator[SourceServer]:
    with SourceServer() as server:
        yield server


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., Server],
    source: SourceServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Server:
    config = tmp_path_factory.mktemp("config") / "chatmedia.toml"
    config.write_text(
        f"""
import_read_timeout = 2

[channels.waba]
allowHosts = ["127.0.0.1"]
apiKey360 = "{D360_KEY}"

[channels.messenger.oauth]
tokenUrl = "{source.url("/oauth/token")}"
clientId = "{CLIENT_ID}"
clientSecret = "{CLIENT_SECRET}"
"""
    )
    return start_server(
        config=str(config), import_allow_networks="127.0.0.1/32", import_ports="1-65535"
    )


def test_import_with_channel_profiles(server: Server, source: SourceServer) -> None:
    with server.client(headers=server.auth) as client:
        d360 = client.post(
            "/v1/files/import",
            json={
                "sourceUrl": source.url("/d360/media"),
                "channel": "waba",
                "conversationId": "c1",
            },
        )
        assert d360.status_code == 201, d360.text
        assert client.get(d360.json()["url"]).content == PNG
        for _ in range(2):
            compat = client.post(
                "/file-engine/api/uploadFileFromUrl",
                json={
                    "sourceUrl": source.url("/protected"),
                    "channel": "messenger",
                    "conversationId": "m1",
                },
            )
            assert compat.status_code == 200, compat.text
            assert compat.json()["type"] == "application/pdf"
        assert source.hits["/oauth/token"] == 1
        stalled = client.post("/v1/files/import", json={"sourceUrl": source.url("/stall")})
        assert (stalled.status_code, stalled.json()["error"]["code"]) == (504, "source_timeout")
    log = server.log.read_text()
    assert D360_KEY not in log
    assert CLIENT_SECRET not in log
    assert "tok-1" not in log


def test_cli_import(server: Server, source: SourceServer) -> None:
    result = server.cli(
        "import", source.url("/named"), "--conversation", "c-cli",
        "--server", server.url, "--key", server.key,
    )  # fmt: skip
    assert '"storedName": "c-cli_résumé.pdf"' in result.stdout
    refused = server.cli(
        "import",
        "http://169.254.169.254/",
        "--server",
        server.url,
        "--key",
        server.key,
        check=False,
    )
    assert refused.returncode == 1
    assert "403" in refused.stderr


SPELLINGS = [
    ("http://127.0.0.1:{port}/", 403),
    ("http://2130706433:{port}/", 403),
    ("http://0x7f000001:{port}/", 403),
    ("http://127.1:{port}/", 403),
    ("http://0177.0.0.1:{port}/", 400),
    ("http://127.0.0.1.:{port}/", 403),
    ("http://localhost:{port}/", 403),
    ("http://LOCALHOST.:{port}/", 403),
    ("http://0.0.0.0:{port}/", 403),
    ("http://0:{port}/", 403),
    ("http://[::1]:{port}/", 403),
    ("http://[::]:{port}/", 403),
    ("http://[::ffff:127.0.0.1]:{port}/", 403),
    ("http://[::ffff:7f00:1]:{port}/", 403),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/", 403),
    ("http://[::127.0.0.1]:{port}/", 403),
    ("http://[64:ff9b::7f00:1]:{port}/", 403),
    ("http://[2002:7f00:1::]:{port}/", 403),
    ("http://a@127.0.0.1:{port}/", 400),
    ("http://example.com\\@127.0.0.1:{port}/", 400),
    ("http://127.0.0.1:{port}\\@example.com/", 400),
]


def test_refused_spellings_never_connect(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    # The allow-list is off, but every port is allowed: the address rule alone refuses.
    server = start_server(import_ports="1-65535")
    with (
        Listener("127.0.0.1") as v4,
        Listener("::1", v4.port) as v6,
        server.client(headers=server.auth) as client,
    ):
        for spelling, status in SPELLINGS:
            url = spelling.format(port=v4.port)
            for path, body in (
                ("/v1/files/import", {"sourceUrl": url}),
                ("/file-engine/api/uploadFileFromUrl", {"sourceUrl": url, "channel": "c"}),
            ):
                response = client.post(path, json=body)
                if path == "/v1/files/import":
                    assert response.status_code == status, (url, response.text)
                    expected = "destination_not_allowed" if status == 403 else "invalid_source_url"
                    assert response.json()["error"]["code"] == expected
                else:
                    assert response.status_code == 404, (url, response.text)
        assert (v4.connections, v6.connections) == (0, 0)
    log = server.log.read_text()
    assert not re.search(r"Traceback|unhandled", log)
