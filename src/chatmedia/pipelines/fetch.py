"""Importing a file from a URL: the server fetches a provider's media URL with the
channel's credentials, under the fetch policy, and stores it exactly as an upload."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import unquote

import anyio

from chatmedia.access.principal import Principal
from chatmedia.egress.credentials import D360_HEADER, ChannelProfile, SourceCredentials
from chatmedia.egress.fetcher import SourceResponse
from chatmedia.egress.policy import host_matches
from chatmedia.egress.urls import parse_source_url
from chatmedia.errors import DestinationNotAllowed, FileTooLarge, SourceTimeout
from chatmedia.models import FileRecord
from chatmedia.pipelines.upload import UploadInfo, store_file
from chatmedia.services import Services
from chatmedia.units import format_size

NO_PROFILE = ChannelProfile()


@dataclass(frozen=True, slots=True)
class ImportRequest:
    """What a connector asks to import. `credentials` win over the channel profile's."""

    source_url: str
    channel: str | None = None
    conversation_id: str | None = None
    file_name: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    credentials: SourceCredentials = field(default_factory=SourceCredentials)


async def import_file(
    services: Services, principal: Principal, request: ImportRequest
) -> FileRecord:
    """Fetch `request.source_url` and store it as a HOSTED file, with the same limits, type
    policy and dedup as an upload. Raises InvalidSourceUrl, DestinationNotAllowed,
    FileTooLarge, UnsupportedMediaType, SourceError or SourceTimeout; nothing partial is
    ever left stored."""
    settings = services.settings
    # 1. Read the URL and choose the credentials: the channel profile's, then the request's.
    source = parse_source_url(request.source_url)
    principal.check_create(request.conversation_id)
    profile = settings.channels.get(request.channel or "", NO_PROFILE)
    if profile.allow_hosts and not host_matches(source.host, profile.allow_hosts):
        raise DestinationNotAllowed(f"channel {request.channel} does not fetch from {source.host}")
    credentials = profile.credentials.overridden_by(request.credentials)
    try:
        with anyio.fail_after(settings.import_deadline):
            # 2. Turn the credentials into headers, getting an OAuth token if need be.
            headers = await _auth_headers(services, credentials)
            # 3. Open the source (every hop checked); refuse an announced size over the limit.
            async with services.fetcher.get(source, headers) as response:
                if (response.content_length or 0) > settings.max_upload_size:
                    limit = format_size(settings.max_upload_size)
                    raise FileTooLarge(f"the source's file is larger than the limit of {limit}")
                # 4. Store the body as an upload would be stored.
                info = UploadInfo(
                    name=request.file_name or source_file_name(response),
                    conversation_id=request.conversation_id,
                    properties=request.properties,
                )
                return await store_file(
                    services, principal, response.body(), lambda: info, response.content_length
                )
    except TimeoutError:
        deadline = settings.import_deadline
        raise SourceTimeout(f"the import took longer than {deadline:g} seconds") from None


async def _auth_headers(services: Services, credentials: SourceCredentials) -> dict[str, str]:
    headers = dict(credentials.headers)
    if credentials.api_key_360:
        headers[D360_HEADER] = credentials.api_key_360
    token = credentials.access_token
    if token is None and credentials.client_credentials is not None:
        token = await services.tokens.access_token(credentials.client_credentials)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def source_file_name(response: SourceResponse) -> str | None:
    """The name the source gives (Content-Disposition, RFC 6266) or the URL's last segment."""
    disposition = response.headers.get("content-disposition")
    if disposition:
        message = Message()
        message["content-disposition"] = disposition
        name = message.get_filename()
        if name:
            return name
    segment = unquote(response.url.url.path.rsplit("/", 1)[-1])
    return segment or None
