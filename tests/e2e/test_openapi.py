"""The OpenAPI document tells the truth: schemathesis, with every check, against a real
`chatmedia serve`; and the document itself resolves and names every answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatmedia.http.shapes import Event
from tests.conftest import png_bytes
from tests.e2e.conftest import Server
from tests.receivers import sse_events
from tests.sources import AnsweringProxy

pytestmark = pytest.mark.e2e
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
# Bounded so that the run takes a minute or two; SCHEMATHESIS_EXAMPLES and
# SCHEMATHESIS_SEED (a fixed one keeps CI repeatable) explore further by hand.
EXAMPLES = os.environ.get("SCHEMATHESIS_EXAMPLES", "40")
SEED = os.environ.get("SCHEMATHESIS_SEED", "20261206")


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Imports and webhooks go through a proxy that answers itself: no generated URL is
    # ever fetched from the network.
    with AnsweringProxy() as proxy:
        # Fuzzing sends many bad keys and signatures from one address: no lockout, which
        # would answer everything else 429 (test_fair_use.py tests it).
        server = Server(
            tmp_path_factory.mktemp("fuzzed"), import_proxy=proxy.url, auth_failure_limit="off"
        )
        server.start()
        yield server
        server.stop()


def test_schemathesis_finds_the_document_true(fuzzed: Server) -> None:
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file", str(CONFIG),
            "run", f"{fuzzed.url}/openapi.json",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", EXAMPLES,
            "--seed", SEED,
            "--header", f"Authorization: Bearer {fuzzed.key}",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=os.environ | {"SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks"},
    )  # fmt: skip
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-20000:]
    assert " passed" in report
    assert "Traceback" not in fuzzed.log.read_text()  # nothing failed unseen


@pytest.fixture(scope="module")
def document(fuzzed: Server) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{fuzzed.url}/openapi.json").json()
    return answer


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in document["components"]["schemas"]
    assert "$defs" not in json.dumps(document)


def test_every_operation_names_its_errors(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            label = f"{method.upper()} {path}"
            # Validation errors answer 400 invalid_request, never FastAPI's 422.
            assert responses.get("422", {}).get("description") != "Validation Error", label
            if operation.get("parameters") or operation.get("requestBody"):
                assert "invalid_request" in responses["400"]["description"], label
            if operation.get("security"):
                assert "unauthorized" in responses["401"]["description"], label
            for status, answer in responses.items():
                if status >= "400":
                    assert answer["description"], label  # the error codes


def test_events_match_the_document(fuzzed: Server) -> None:
    # In a tenant of its own: the fuzzing may have set the default tenant's quotas to 0.
    with fuzzed.client(headers=fuzzed.auth) as admin:
        made = admin.post(
            "/v1/keys", json={"name": "events", "scopes": ["admin"], "tenant": "events-doc"}
        )
        assert made.status_code == 201, made.text
    with fuzzed.client(headers={"Authorization": f"Bearer {made.json()['key']}"}) as client:
        created = client.post("/v1/files", files={"file": ("a.png", png_bytes())})
        assert created.status_code == 201, created.text
        with client.stream("GET", "/v1/events", params={"lastEventId": "0"}) as stream:
            event = next(sse_events(stream))
    parsed = Event.model_validate(event.data)
    assert parsed.id == event.id
    assert parsed.type == event.event
