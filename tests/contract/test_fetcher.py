"""The fetcher and the import workflow against a real local source server."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from chatmedia.access.principal import operator
from chatmedia.config import Settings
from chatmedia.db.migrate import upgrade
from chatmedia.egress.credentials import ClientCredentials, SourceCredentials
from chatmedia.egress.fetcher import Fetcher, Resolver, system_resolver
from chatmedia.egress.oauth import TokenCache
from chatmedia.egress.policy import FetchPolicy, IPAddress
from chatmedia.egress.urls import parse_source_url
from chatmedia.errors import (
    ChatMediaError,
    DestinationNotAllowed,
    FileTooLarge,
    SourceError,
    SourceTimeout,
    UnsupportedMediaType,
)
from chatmedia.pipelines.fetch import ImportRequest, import_file
from chatmedia.services import Services, open_services
from tests.sources import CLIENT_ID, CLIENT_SECRET, D360_KEY, PNG, Listener, SourceServer

pytestmark = pytest.mark.anyio
LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.fixture
def source() -> Iterator[SourceServer]:
    with SourceServer() as server:
        yield server


def open_to_loopback(make_settings: Callable[..., Settings], **values: str) -> Settings:
    values = {"import_allow_networks": "127.0.0.1/32", "import_ports": "1-65535"} | values
    return make_settings(**values)


@pytest.fixture
async def services(make_settings: Callable[..., Settings]) -> AsyncIterator[Services]:
    services = open_services(open_to_loopback(make_settings, import_read_timeout="1"))
    await upgrade(services.db)
    yield services
    await services.close()


async def staged(services: Services) -> list[Path]:
    staging = services.settings.blob_dir / ".staging"
    return list(staging.iterdir()) if staging.exists() else []


async def test_import_stores_like_an_upload(services: Services, source: SourceServer) -> None:
    record = await import_file(
        services,
        operator(),
        ImportRequest(source.url("/file.png"), conversation_id="c1", properties={"a": 1}),
    )
    assert (record.name, record.stored_name, record.content_type) == (
        "file.png",
        "c1_file.png",
        "image/png",
    )
    assert record.size == len(PNG)
    assert record.properties == {"a": 1}
    assert source.headers_seen[-1]["accept-encoding"] == "identity"


async def test_name_from_content_disposition(services: Services, source: SourceServer) -> None:
    record = await import_file(services, operator(), ImportRequest(source.url("/named")))
    assert record.name == "résumé.pdf"
    named = await import_file(
        services, operator(), ImportRequest(source.url("/named"), file_name="cv.pdf")
    )
    assert named.name == "cv.pdf"


async def test_redirects_are_followed_up_to_three(services: Services, source: SourceServer) -> None:
    record = await import_file(services, operator(), ImportRequest(source.url("/redirect/3")))
    assert record.size == len(PNG)
    with pytest.raises(SourceError, match="redirected more than 3 times"):
        await import_file(services, operator(), ImportRequest(source.url("/redirect/4")))


async def test_each_redirect_hop_is_checked(services: Services, source: SourceServer) -> None:
    with Listener("127.0.0.2") as listener:
        target = f"http://127.0.0.2:{listener.port}/file.png"
        with pytest.raises(DestinationNotAllowed):
            await import_file(services, operator(), ImportRequest(source.url(f"/to?url={target}")))
        assert listener.connections == 0
    with pytest.raises(DestinationNotAllowed):
        await import_file(
            services, operator(), ImportRequest(source.url("/to?url=http://169.254.169.254/"))
        )


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("/status/404", SourceError, "answered 404"),
        ("/status/500", SourceError, "answered 500"),
        ("/lying", SourceError, "broke off"),
        ("/stall", SourceTimeout, "stopped sending"),
        ("/big", FileTooLarge, "larger than the limit"),
        ("/bomb", FileTooLarge, "larger than the limit"),
    ],
)
async def test_failures_leave_nothing(
    services: Services, source: SourceServer, path: str, error: type[ChatMediaError], message: str
) -> None:
    with pytest.raises(error, match=message):
        await import_file(services, operator(), ImportRequest(source.url(path)))
    assert await staged(services) == []
    async with services.db.read() as conn:
        assert (await conn.exec_driver_sql("SELECT count(*) FROM files")).scalar() == 0


async def test_deadline(services: Services, source: SourceServer) -> None:
    hurried = replace(services, settings=replace(services.settings, import_deadline=0.5))
    with pytest.raises(SourceTimeout, match=r"longer than 0\.5 seconds"):
        await import_file(hurried, operator(), ImportRequest(source.url("/slow")))
    assert await staged(services) == []


async def test_type_policy(services: Services, source: SourceServer) -> None:
    images_only = replace(services, settings=replace(services.settings, allowed_types=("image/*",)))
    with pytest.raises(UnsupportedMediaType):
        await import_file(images_only, operator(), ImportRequest(source.url("/file.pdf")))


async def test_360dialog_key(services: Services, source: SourceServer) -> None:
    with pytest.raises(SourceError, match="answered 401"):
        await import_file(services, operator(), ImportRequest(source.url("/d360/media")))
    request = ImportRequest(
        source.url("/d360/media"), credentials=SourceCredentials(api_key_360=D360_KEY)
    )
    assert (await import_file(services, operator(), request)).size == len(PNG)


async def test_oauth_client_credentials_token_is_cached(
    services: Services, source: SourceServer
) -> None:
    client = ClientCredentials(source.url("/oauth/token"), CLIENT_ID, CLIENT_SECRET)
    request = ImportRequest(
        source.url("/protected"), credentials=SourceCredentials(client_credentials=client)
    )
    first = await import_file(services, operator(), request)
    second = await import_file(services, operator(), request)
    assert first.sha256 == second.sha256
    assert source.hits["/oauth/token"] == 1
    wrong = replace(client, client_secret="wrong")
    bad = ImportRequest(
        source.url("/protected"), credentials=SourceCredentials(client_credentials=wrong)
    )
    with pytest.raises(SourceError, match="token endpoint answered 401") as info:
        await import_file(services, operator(), bad)
    assert "wrong" not in str(info.value)


async def test_credentials_stay_with_their_origin(services: Services, source: SourceServer) -> None:
    with SourceServer() as other:  # another port: another origin
        credentials = SourceCredentials(
            api_key_360="k", access_token="t", headers=(("X-Secret", "s"),)
        )
        request = ImportRequest(
            source.url(f"/to?url={other.url('/file.png')}"), credentials=credentials
        )
        await import_file(services, operator(), request)
        assert source.headers_seen[-1]["d360-api-key"] == "k"
        assert source.headers_seen[-1]["authorization"] == "Bearer t"
        seen = other.headers_seen[-1]
        assert not {"d360-api-key", "authorization", "x-secret"} & set(seen)


async def test_secrets_are_not_logged(
    services: Services, source: SourceServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = SourceCredentials(api_key_360="secret-360", access_token="secret-token")
    with pytest.raises(SourceError) as info:
        await import_file(
            services, operator(), ImportRequest(source.url("/status/403"), credentials=credentials)
        )
    for text in (caplog.text, str(info.value)):
        assert "secret-360" not in text
        assert "secret-token" not in text


def counting_resolver(answers: list[list[IPAddress]]) -> tuple[Resolver, list[str]]:
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[IPAddress]:
        calls.append(host)
        return answers[min(len(calls), len(answers)) - 1]

    return resolve, calls


async def test_dns_rebinding_gets_nowhere(source: SourceServer) -> None:
    # The name answers 127.0.0.1 (allowed) once, then 127.0.0.2; a fetcher that resolved
    # again to connect would reach the tripwire listener on 127.0.0.2.
    with Listener("127.0.0.2", source.port) as tripwire:
        resolve, calls = counting_resolver([[LOOPBACK], [ipaddress.ip_address("127.0.0.2")]])
        policy = FetchPolicy(
            allow_networks=(ipaddress.ip_network("127.0.0.1/32"),), ports=((1, 65535),)
        )
        fetcher = Fetcher(policy, resolve)
        url = parse_source_url(f"http://media.test:{source.port}/file.png")
        async with fetcher.get(url, {}) as response:
            body = b"".join([chunk async for chunk in response.body()])
        assert body == PNG
        assert calls == ["media.test"]
        assert tripwire.connections == 0
        assert source.headers_seen[-1]["host"] == f"media.test:{source.port}"


@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.1"],
        ["169.254.169.254"],
        ["100.64.0.1"],
        ["8.8.8.8", "192.168.1.1"],  # every address is checked, not only the first
        ["::ffff:10.0.0.1"],
        ["fd00:ec2::254"],
        ["64:ff9b::a9fe:a9fe"],
    ],
)
async def test_names_resolving_to_refused_addresses(addresses: list[str]) -> None:
    # Refused before any connection: destination() resolves and checks, nothing more.
    resolve, _ = counting_resolver([[ipaddress.ip_address(a) for a in addresses]])
    fetcher = Fetcher(FetchPolicy(), resolve)
    with pytest.raises(DestinationNotAllowed):
        await fetcher.destination(parse_source_url("https://media.example.com/x"))


async def test_allowed_hosts_bypass_the_address_check() -> None:
    resolve, _ = counting_resolver([[ipaddress.ip_address("10.0.0.5")]])
    fetcher = Fetcher(FetchPolicy(allow_hosts=("media.internal",)), resolve)
    target, extensions = await fetcher.destination(parse_source_url("https://media.internal/x"))
    assert target.host == "10.0.0.5"
    assert extensions == {"sni_hostname": "media.internal"}


async def test_ports_are_checked_before_resolving() -> None:
    resolve, calls = counting_resolver([[ipaddress.ip_address("8.8.8.8")]])
    with pytest.raises(DestinationNotAllowed, match="port 22"):
        await Fetcher(FetchPolicy(), resolve).destination(
            parse_source_url("http://example.com:22/")
        )
    assert calls == []


async def test_system_resolver() -> None:
    assert LOOPBACK in await system_resolver("localhost", 80)
    with pytest.raises(SourceError, match="does not resolve"):
        await system_resolver("no-such-host.invalid", 80)


async def test_token_cache_renews_before_expiry(source: SourceServer) -> None:
    now = [1000.0]
    policy = FetchPolicy(
        allow_networks=(ipaddress.ip_network("127.0.0.1/32"),), ports=((1, 65535),)
    )
    cache = TokenCache(Fetcher(policy), clock=lambda: now[0])
    client = ClientCredentials(source.url("/oauth/token"), CLIENT_ID, CLIENT_SECRET, "media")
    assert await cache.access_token(client) == "tok-1"
    now[0] += 3000
    assert await cache.access_token(client) == "tok-1"
    now[0] += 600  # within 30 s of expiry (3600 s)
    assert await cache.access_token(client) == "tok-2"


async def test_environment_proxies_are_ignored(
    services: Services, source: SourceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Listener("127.0.0.1") as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        record = await import_file(services, operator(), ImportRequest(source.url("/file.png")))
        assert record.size == len(PNG)
        assert proxy.connections == 0


async def test_a_configured_proxy_is_used(source: SourceServer) -> None:
    with Listener("127.0.0.1") as proxy:
        policy = FetchPolicy(
            allow_networks=(ipaddress.ip_network("127.0.0.1/32"),),
            ports=((1, 65535),),
            proxy=f"http://127.0.0.1:{proxy.port}",
        )
        with pytest.raises(SourceError):  # this "proxy" hangs up
            async with Fetcher(policy).get(parse_source_url(source.url("/file.png")), {}):
                pass
        assert proxy.connections == 1
        assert source.hits["/file.png"] == 0
