"""The JSON shapes clients see: File, Message and Event. Workflows render them too, for the
event log, so they live outside the HTTP layer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from chatmedia.access.links import Links, content_path, preview_path
from chatmedia.models import Event, FileRecord, MediaState, MessageRecord, ScanState


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z."""
    return moment.isoformat().replace("+00:00", "Z")


def file_view(record: FileRecord, public_url: str, links: Links | None = None) -> dict[str, Any]:
    """A File (ChatKitty's shape, extended). `url` is the reference of an EXTERNAL file;
    of a HOSTED one, its content URL, signed by `links` when the File leaves the server
    (the event log keeps it unsigned, and it is signed afresh each time it is sent)."""
    if record.url is not None:
        url = record.url
    elif links is not None:
        url = links.content_url(record.id, record.link_generation)[0]
    else:
        url = public_url + content_path(record.id)

    def preview_url(size: int) -> str:
        if links is not None:
            return links.preview_url(record.id, record.link_generation, size)
        return f"{public_url}{preview_path(record.id)}?size={size}"

    view: dict[str, Any] = {
        "id": record.id,
        "type": record.type,
        "name": record.name,
        "storedName": record.stored_name,
        "contentType": record.content_type,
        "size": record.size,
        "url": url,
        "sha256": record.sha256,
        "conversationId": record.conversation_id,
        "properties": dict(record.properties),
        "createdAt": timestamp(record.created_at),
    }
    if record.scan is not None:
        view["scan"] = scan_view(record.scan)
    if record.media is not None:
        view["media"] = media_view(record.media, preview_url)
    if record.metadata_stripped:
        view["metadataStripped"] = True
    return view


def media_view(media: MediaState, preview_url: Callable[[int], str]) -> dict[str, Any]:
    """A File's `media`: what is known so far, its previews, and `processing`."""
    view: dict[str, Any] = {"processing": media.status}
    fields = (
        ("width", media.width), ("height", media.height), ("durationMs", media.duration_ms),
        ("blurhash", media.blurhash), ("pages", media.pages),
    )  # fmt: skip
    view |= {name: value for name, value in fields if value is not None}
    if media.waveform is not None:
        view["waveform"] = list(media.waveform)
    if media.previews:
        view["previews"] = [
            {"size": p.size, "width": p.width, "height": p.height,
             "contentType": p.content_type, "url": preview_url(p.size)}
            for p in media.previews
        ]  # fmt: skip
    return view


def scan_view(scan: ScanState) -> dict[str, Any]:
    """A File's `scan`: its status, and what was found and when, once known."""
    view: dict[str, Any] = {"status": scan.status}
    if scan.signature is not None:
        view["signature"] = scan.signature
    if scan.scanned_at is not None:
        view["scannedAt"] = timestamp(scan.scanned_at)
    return view


def message_view(
    message: MessageRecord, file: FileRecord | None, public_url: str, links: Links | None = None
) -> dict[str, Any]:
    """A Message; `file` is null for a text message or when its file has been deleted."""
    return {
        "id": message.id,
        "conversationId": message.conversation_id,
        "type": message.type,
        "body": message.body,
        "file": file_view(file, public_url, links) if file is not None else None,
        "groupTag": message.group_tag,
        "properties": dict(message.properties),
        "sender": dict(message.sender),
        "createdAt": timestamp(message.created_at),
    }


def event_view(event: Event) -> dict[str, Any]:
    """An event as SSE clients and webhooks see it."""
    return {
        "id": str(event.seq),
        "type": event.type,
        "conversationId": event.conversation_id,
        "createdAt": timestamp(event.created_at),
        "data": dict(event.data),
    }


def hosted_file_id(data: Mapping[str, Any]) -> str | None:
    """The id of the HOSTED file an event's data (a File or a Message) carries, if any."""
    file = data.get("file") if "file" in data else data
    if isinstance(file, Mapping) and file.get("type") == "HOSTED":
        return str(file["id"])
    return None


def with_fresh_link(
    data: Mapping[str, Any], links: Links, generations: Mapping[str, int]
) -> dict[str, Any]:
    """An event's data with its HOSTED file's URL signed now (from when it is sent, not
    when it happened), while the file exists; `generations` are the files' current link
    generations."""
    file_id = hosted_file_id(data)
    if file_id is None or file_id not in generations:
        return dict(data)
    generation = generations[file_id]
    file = dict(data.get("file", data))
    file["url"] = links.content_url(file_id, generation)[0]
    if "previews" in file.get("media", {}):
        previews = [
            dict(p) | {"url": links.preview_url(file_id, generation, p["size"])}
            for p in file["media"]["previews"]
        ]
        file["media"] = dict(file["media"]) | {"previews": previews}
    return dict(data) | {"file": file} if "file" in data else file
