"""The command line's tus client: large files go up in chunks that survive a cut
connection, and a command run again after an interruption goes on where it stopped.

A small client of our own over httpx (which the command line already uses): tuspy, the
Python client, would bring in requests for what is three requests here. Where an upload
stands is kept in `~/.cache/chatmedia/uploads.json`, by server, file path, size and
modification time, until it is done."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK_SIZE = 8 * 1024 * 1024
# Tries of one chunk before the command gives up (each after a HEAD that says where to go).
ATTEMPTS = 5
STATE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "chatmedia" / "uploads.json"
)


class UploadFailed(Exception):
    """The server refused the upload; the answer is attached."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"the server answered {response.status_code}")
        self.response = response


def upload(
    client: httpx.Client,
    path: Path,
    pairs: Mapping[str, str],
    advance: Callable[[int], None],
) -> str:
    """Send the file at `path` resumably, calling `advance` with each chunk's size (and
    with what was sent before, when resuming); the File's id."""
    size = path.stat().st_size
    key = _state_key(client, path)
    url, offset = _resumed(client, _load().get(key))
    if url is None:
        url, offset = _create(client, size, pairs), 0
        _save(key, url)
    advance(offset)
    with path.open("rb") as file:
        attempts = 0
        while offset < size or size == 0:
            file.seek(offset)
            chunk = file.read(CHUNK_SIZE)
            headers = TUS | {
                "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset),
            }  # fmt: skip
            try:
                answer = client.patch(url, content=chunk, headers=headers)
            except httpx.TransportError:
                attempts += 1
                if attempts >= ATTEMPTS:
                    raise
                time.sleep(attempts)
                moved = _offset(client, url)
                advance(moved - offset)
                offset = moved
                continue
            if answer.status_code != 204:
                raise UploadFailed(answer)
            attempts = 0
            advance(len(chunk))
            offset = int(answer.headers["upload-offset"])
            if offset >= size:
                _forget(key)
                return str(answer.headers["location"]).rsplit("/", 1)[1]
    _forget(key)
    return url.rsplit("/", 1)[1]


def _create(client: httpx.Client, size: int, pairs: Mapping[str, str]) -> str:
    metadata = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())
    headers = TUS | {"Upload-Length": str(size), "Upload-Metadata": metadata}
    answer = client.post("/v1/uploads", headers=headers)
    if answer.status_code != 201:
        raise UploadFailed(answer)
    return str(answer.headers["location"])


def _resumed(client: httpx.Client, url: str | None) -> tuple[str | None, int]:
    """An upload begun before and where it stands; (None, 0) when there is none to go on
    with (never begun, or expired meanwhile)."""
    if url is None:
        return None, 0
    answer = client.head(url, headers=TUS)
    if answer.status_code in (404, 410):
        return None, 0
    if answer.status_code != 200:
        raise UploadFailed(answer)
    return url, int(answer.headers["upload-offset"])


def _offset(client: httpx.Client, url: str) -> int:
    answer = client.head(url, headers=TUS)
    if answer.status_code != 200:
        raise UploadFailed(answer)
    return int(answer.headers["upload-offset"])


def _state_key(client: httpx.Client, path: Path) -> str:
    stat = path.stat()
    return f"{client.base_url} {path.resolve()} {stat.st_size} {stat.st_mtime_ns}"


def _state() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "chatmedia" / "uploads.json"


def _load() -> dict[str, str]:
    try:
        loaded = json.loads(_state().read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _save(key: str, url: str) -> None:
    _write(_load() | {key: url})


def _forget(key: str) -> None:
    state = _load()
    if state.pop(key, None) is not None:
        _write(state)


def _write(state: dict[str, str]) -> None:
    path = _state()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    temporary.replace(path)
