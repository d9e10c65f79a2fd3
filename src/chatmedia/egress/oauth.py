"""OAuth 2.0 client-credentials tokens (RFC 6749 §4.4), cached until shortly before they
expire and shared by the imports that use the same client."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from urllib.parse import quote_plus

import anyio

from chatmedia.egress.credentials import ClientCredentials
from chatmedia.egress.fetcher import Fetcher
from chatmedia.egress.urls import parse_source_url
from chatmedia.errors import InvalidSourceUrl, SourceError

# A token is renewed this long before it expires, so none expires in flight.
EXPIRY_MARGIN = 30.0
# For tokens that do not say how long they last.
DEFAULT_LIFETIME = 300.0


class TokenCache:
    """Access tokens by client, fetched through the fetcher (so under its policy)."""

    def __init__(self, fetcher: Fetcher, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetcher = fetcher
        self._clock = clock
        self._tokens: dict[tuple[str, str, str, str], tuple[str, float]] = {}
        self._locks: dict[tuple[str, str, str, str], anyio.Lock] = {}

    async def access_token(self, client: ClientCredentials) -> str:
        """A valid token for `client`, from the cache or the token endpoint."""
        secret_hash = hashlib.sha256(client.client_secret.encode()).hexdigest()
        key = (client.token_url, client.client_id, client.scope or "", secret_hash)
        async with self._locks.setdefault(key, anyio.Lock()):  # one request per client at once
            cached = self._tokens.get(key)
            if cached is not None and cached[1] > self._clock():
                return cached[0]
            token, lifetime = await self._request(client)
            self._tokens[key] = (token, self._clock() + max(lifetime - EXPIRY_MARGIN, 0.0))
            return token

    async def _request(self, client: ClientCredentials) -> tuple[str, float]:
        try:
            target = parse_source_url(client.token_url)
        except InvalidSourceUrl:
            raise InvalidSourceUrl("oauth.tokenUrl is not a valid http(s) URL") from None
        form = {"grant_type": "client_credentials"}
        if client.scope:
            form["scope"] = client.scope
        headers = {"Authorization": _basic_auth(client), "Accept": "application/json"}
        status, answer = await self._fetcher.post(target, headers, form=form)
        if status >= 400:
            raise SourceError(f"the token endpoint answered {status}")
        try:
            body = json.loads(answer)
            token = body["access_token"]
            lifetime = float(body.get("expires_in", DEFAULT_LIFETIME))
        except (ValueError, KeyError, TypeError):
            raise SourceError("the token endpoint's answer has no access_token") from None
        if not isinstance(token, str) or not token:
            raise SourceError("the token endpoint's answer has no access_token")
        return token, lifetime


def _basic_auth(client: ClientCredentials) -> str:
    # RFC 6749 §2.3.1: id and secret are form-urlencoded, then sent as HTTP Basic.
    pair = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()
