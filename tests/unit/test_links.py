"""Signed links (chatmedia.access.links): a link lives at least as long as it was made
for, whatever the fraction of a second it was made at, and at most a second longer."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmedia.access import links as links_module
from chatmedia.access.links import Links
from chatmedia.errors import LinkExpired

RESOURCE = "/v1/files/abc/content"


@given(
    made_at=st.floats(min_value=1_700_000_000, max_value=1_900_000_000),
    seconds=st.integers(min_value=1, max_value=7 * 24 * 3600),
)
def test_a_link_lives_as_long_as_asked_and_at_most_a_second_more(
    made_at: float, seconds: int
) -> None:
    links = Links(timedelta(hours=1), "https://media.example", (b"k" * 32,))
    with mock.patch.object(links_module.time, "time", return_value=made_at):
        query, expires = links.sign(RESOURCE, 0, ttl=timedelta(seconds=seconds))
    params = dict(item.split("=", 1) for item in query.split("&"))
    links.check(RESOURCE, params, now=made_at + seconds - 0.001)  # still valid
    assert made_at + seconds <= expires < made_at + seconds + 1
    with pytest.raises(LinkExpired):
        links.check(RESOURCE, params, now=made_at + seconds + 1.001)
