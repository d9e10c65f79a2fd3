import pytest

from chatmedia.egress.credentials import (
    ClientCredentials,
    SourceCredentials,
    parse_channel,
    parse_headers,
    parse_oauth,
)


def test_oauth_forms() -> None:
    assert parse_oauth({"accessToken": "t"}) == ("t", None)
    token, client = parse_oauth({"tokenUrl": "https://a/t", "clientId": "c", "clientSecret": "s"})
    assert token is None
    assert client == ClientCredentials("https://a/t", "c", "s", None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("token", "must be an object"),
        ({"clientId": "c"}, "missing: tokenUrl, clientSecret"),
        ({"accessToken": ""}, "oauth.accessToken"),
        ({"accessToken": "t", "extra": 1}, "unknown keys: extra"),
    ],
)
def test_oauth_errors_never_show_values(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_oauth(value)
    assert "secret-value" not in str(info.value)


def test_headers() -> None:
    assert parse_headers({"X-Trace": "1"}) == (("X-Trace", "1"),)
    for bad in (
        {"Host": "x"},
        {"X": "a\r\nB: c"},
        {"bad name": "x"},
        {f"H{i}": "v" for i in range(21)},
    ):
        with pytest.raises(ValueError, match="headers"):
            parse_headers(bad)


def test_request_credentials_win_over_the_profile() -> None:
    profile = SourceCredentials(
        api_key_360="p", access_token="pt", headers=(("X-A", "1"), ("X-B", "2"))
    )
    request = SourceCredentials(
        client_credentials=ClientCredentials("https://a/t", "c", "s"), headers=(("x-b", "3"),)
    )
    merged = profile.overridden_by(request)
    assert merged.api_key_360 == "p"
    assert merged.access_token is None  # the request's oauth replaces the profile's
    assert merged.client_credentials == request.client_credentials
    assert dict(merged.headers) == {"X-A": "1", "x-b": "3"}


def test_reprs_hide_secrets() -> None:
    credentials = SourceCredentials(
        api_key_360="secret-value",
        access_token="secret-value",
        client_credentials=ClientCredentials("https://a/t", "c", "secret-value"),
        headers=(("X-Key", "secret-value"),),
    )
    assert "secret-value" not in repr(credentials)
    assert "secret-value" not in repr(parse_channel({"apiKey360": "secret-value"}))


def test_channel_profiles() -> None:
    profile = parse_channel(
        {"allowHosts": ["Waba.360dialog.io"], "apiKey360": "k", "headers": {"X-A": "1"}}
    )
    assert profile.allow_hosts == ("waba.360dialog.io",)
    assert profile.credentials.api_key_360 == "k"
    with pytest.raises(ValueError, match="unknown keys: apikey"):
        parse_channel({"apikey": "k"})
    with pytest.raises(ValueError, match="allowHosts"):
        parse_channel({"allowHosts": "one.example"})
