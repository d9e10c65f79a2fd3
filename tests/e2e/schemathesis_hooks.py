"""schemathesis's hooks for tests/e2e/test_openapi.py: how to send a tus PATCH's body
(application/offset+octet-stream is bytes, as application/octet-stream)."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.transport.serialization import serialize_binary


@schemathesis.serializer("application/offset+octet-stream")
def offset_stream(_: Any, value: Any) -> bytes:
    return serialize_binary(value)
