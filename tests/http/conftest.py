"""An in-process app with one API key, for broad HTTP tests (the e2e suite drives a real
server process for the main flows)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from chatmedia.config import Settings
from chatmedia.http.app import create_app
from chatmedia.pipelines.keys import KeySpec, create_key
from chatmedia.services import Services


@dataclass
class Api:
    client: TestClient
    key: str
    services: Services

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def upload(
        self, data: bytes, filename: str = "a.png", path: str = "/v1/files", **fields: str
    ) -> dict[str, object]:
        files = {"file": (filename, data)}
        response = self.client.post(path, headers=self.auth, files=files, data=fields)
        assert response.status_code in (200, 201), response.text
        body: dict[str, object] = response.json()
        return body


@pytest.fixture
def make_api(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Api]]:
    clients: list[TestClient] = []

    def make(**settings: str) -> Api:
        app = create_app(make_settings(**settings))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        services: Services = app.state.services
        _, secret = client.portal.call(create_key, services, KeySpec("tests"))  # type: ignore[union-attr]
        return Api(client=client, key=secret, services=services)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()
