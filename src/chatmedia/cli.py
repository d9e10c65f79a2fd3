"""The `chatmedia` command: the server and its administration, and a small client."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO, TypeVar, cast

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from chatmedia import resumable
from chatmedia.access.principal import ADMIN, DEFAULT_TENANT, operator
from chatmedia.cli_run import settings_or_exit as _settings
from chatmedia.cli_run import with_services as _with_services
from chatmedia.config import describe
from chatmedia.config_values import quota_count, quota_size
from chatmedia.db.migrate import (
    current_revision,
    ensure_schema,
    head_revision,
    upgrade,
)
from chatmedia.db.usage import Limits
from chatmedia.errors import ChatMediaError
from chatmedia.fairuse.rates import parse_rate
from chatmedia.pipelines import keys as key_pipeline
from chatmedia.pipelines import quarantine
from chatmedia.pipelines.erasure import erase_conversation
from chatmedia.pipelines.files import sweep_expired
from chatmedia.pipelines.keys import KeySpec
from chatmedia.pipelines.tenants import every_tenant, set_quota
from chatmedia.pipelines.tokens import PageRights, operator_ui_link
from chatmedia.services import Services
from chatmedia.units import parse_duration

app = typer.Typer(help="chatmedia: files and media for chat platforms.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
tenants_app = typer.Typer(help="Tenants' usage and quotas.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
quarantine_app = typer.Typer(help="What the malware scanner found.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

ServerOption = Annotated[
    str, typer.Option("--server", envvar="CHATMEDIA_SERVER", help="The server's base URL.")
]
KeyOption = Annotated[
    str, typer.Option("--key", envvar="CHATMEDIA_KEY", help="An API key.", show_default=False)
]


def main() -> None:
    """Entry point of the `chatmedia` script."""
    app()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [CHATMEDIA_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [CHATMEDIA_PORT].")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Serve the API (on granian). On first start it creates and prints an API key."""
    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:  # the server process reads its settings from the environment
            os.environ["CHATMEDIA_" + name] = str(value)
    # Report a configuration error or a schema that is behind here, once, with the CLI's
    # formatting (SQLite is migrated in place), rather than from every worker.
    _with_services(lambda services: ensure_schema(services.db))
    # glibc makes a malloc arena per thread that allocates (up to 8 per core): the hashing
    # and file threads would each keep one. Two keep the workers 3-5 MiB smaller after
    # bursts of concurrent uploads (docs/benchmarks.md), and 2 cores contend little.
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "chatmedia.server"])  # noqa: S606


@app.command()
def migrate() -> None:
    """Apply the database migrations this version needs."""

    async def run(services: Services) -> str | None:
        await upgrade(services.db)
        return await current_revision(services.db)

    console.print(f"database at revision {_with_services(run)} (head {head_revision()})")


@app.command("config")
def show_config() -> None:
    """Print the effective configuration as KEY=value lines, with secrets hidden."""
    rows = [(f"{key}={value}", source) for key, value, source in describe(_settings())]
    width = max(len(setting) for setting, _ in rows)
    for setting, source in rows:
        print(f"{setting:<{width}}  # {source}")


@app.command()
def gc() -> None:
    """Delete files past the retention period now (the server also does this periodically)."""
    settings = _settings()
    if settings.retention is None:
        console.print("CHATMEDIA_RETENTION is not set: files are kept forever")
        return
    console.print(f"deleted {_with_services(sweep_expired)} expired files")


@app.command()
def purge(
    conversation: Annotated[str, typer.Option(help="The conversation to erase.")],
    tenant: Annotated[str, typer.Option(help="Its tenant.")] = DEFAULT_TENANT,
) -> None:
    """Erase a conversation: its files, messages, events and what could replay them."""
    erased = _with_services(lambda s: erase_conversation(s, operator(tenant), conversation))
    console.print(
        f"erased {erased.files} files, {erased.messages} messages and {erased.events} events"
    )


@app.command("ui-link")
def ui_link(
    conversation: Annotated[str, typer.Option(help="The conversation of the page.")],
    tenant: Annotated[str, typer.Option(help="Its tenant.")] = DEFAULT_TENANT,
    expires_in: Annotated[str, typer.Option(help="How long the link works (at most 7d).")] = "12h",
    can_upload: Annotated[bool, typer.Option("--can-upload", help="It may upload.")] = False,
    can_delete: Annotated[bool, typer.Option("--can-delete", help="It may delete.")] = False,
    can_send: Annotated[bool, typer.Option("--can-send", help="It may post messages.")] = False,
) -> None:
    """Print a link to a conversation's media page, on a key made for it alone."""
    rights = PageRights(can_upload, can_delete, can_send)
    try:
        ttl = parse_duration(expires_in)
        url, expires, key_id = _with_services(
            lambda s: operator_ui_link(s, tenant, conversation, rights, ttl)
        )
    except (ChatMediaError, ValueError) as e:
        err_console.print(getattr(e, "message", str(e)))
        raise typer.Exit(1) from None
    err_console.print(
        f"valid until {expires:%Y-%m-%d %H:%M} UTC; revoke: chatmedia keys revoke {key_id}"
    )
    print(url)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")],
    scope: Annotated[
        list[str] | None,
        typer.Option(help="A scope the key has (repeat it); without any, admin."),
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="The tenant the key belongs to.")] = None,
    conversation: Annotated[
        list[str] | None,
        typer.Option(help="A conversation id, or a prefix such as 'acme-*' (repeat it)."),
    ] = None,
    expires: Annotated[
        str | None, typer.Option(help="How long the key lives, such as 30d or 12h.")
    ] = None,
    rate: Annotated[
        str | None, typer.Option(help="Its own request rate, such as 50/s (burst 2x).")
    ] = None,
) -> None:
    """Create a key; the key itself is printed alone on the last line."""
    try:
        spec = KeySpec(
            name=name,
            scopes=key_pipeline.parse_scopes(scope) if scope else (ADMIN,),
            tenant=tenant,
            conversations=tuple(conversation) if conversation else None,
            expires_at=datetime.now(UTC) + parse_duration(expires) if expires else None,
            rate_limit=parse_rate(rate) if rate else None,
        )
        key, secret = _with_services(lambda s: key_pipeline.create_key(s, spec))
    except (ChatMediaError, ValueError) as e:
        err_console.print(getattr(e, "message", str(e)))
        raise typer.Exit(1) from None
    console.print(f"created key {key.id} ({key.name}); it is shown only this once:")
    print(secret)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (their secrets are not stored and cannot be shown)."""
    table = Table(
        "id", "name", "prefix", "scopes", "tenant", "conversations", "expires", "created",
        "last used", "revoked", "rate",
    )  # fmt: skip
    for key in _with_services(key_pipeline.list_keys):
        table.add_row(
            key.id,
            key.name,
            key.prefix + "…",
            " ".join(key.scopes),
            key.tenant or "",
            " ".join(key.conversations) if key.conversations is not None else "(any)",
            _moment(key.expires_at),
            _moment(key.created_at),
            _moment(key.last_used_at),
            _moment(key.revoked_at),
            key.rate_limit or "(default)",
        )
    # Piped, not to a terminal: no width to fit, so nothing is cut.
    (console if console.is_terminal else Console(width=240)).print(table)


def _moment(moment: datetime | None) -> str:
    return moment.isoformat(timespec="minutes") if moment else ""


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key: requests with it get 401 from then on."""
    try:
        _with_services(lambda s: key_pipeline.revoke_key(s, key_id))
    except ChatMediaError as e:
        err_console.print(e.message)
        raise typer.Exit(1) from None
    console.print(f"revoked {key_id}")


@tenants_app.command("set-quota")
def tenants_set_quota(
    tenant: str,
    bytes_: Annotated[
        str | None, typer.Option("--bytes", help="Bytes it may store, such as 10GiB.")
    ] = None,
    files: Annotated[str | None, typer.Option(help="Files it may hold.")] = None,
    daily_bytes: Annotated[
        str | None, typer.Option(help="Bytes it may add per day (UTC), such as 1GiB.")
    ] = None,
) -> None:
    """Give a tenant quotas of its own, replacing the defaults (an option left out, or
    'unlimited', is unlimited)."""
    try:
        limits = Limits(
            quota_size(bytes_ or ""), quota_count(files or ""), quota_size(daily_bytes or "")
        )
        _with_services(lambda s: set_quota(s, tenant, limits))
    except (ChatMediaError, ValueError) as e:
        err_console.print(getattr(e, "message", str(e)))
        raise typer.Exit(1) from None
    console.print(f"set the quotas of tenant {tenant}")


@tenants_app.command("list")
def tenants_list() -> None:
    """Every tenant's usage and quotas."""
    table = Table("tenant", "bytes", "files", "today", "uploading", "quota (bytes, files, per day)")
    for usage in _with_services(every_tenant):
        figures, limits = usage.figures, usage.limits
        quota = ", ".join(
            "unlimited" if v is None else str(v)
            for v in (limits.max_bytes, limits.max_files, limits.max_daily_bytes)
        )
        table.add_row(
            figures.tenant,
            str(figures.bytes),
            str(figures.files),
            str(usage.daily_bytes),
            f"{figures.reserved_bytes} bytes, {figures.reserved_files} files",
            quota + ("" if usage.own else " (defaults)"),
        )
    (console if console.is_terminal else Console(width=240)).print(table)


@quarantine_app.command("list")
def quarantine_list(limit: int = 100) -> None:
    """Uploads refused as infected and files found infected later, newest first."""
    table = Table("id", "detected", "tenant", "file", "signature", "sha256", "size", "released")
    page = _with_services(lambda s: quarantine.list_quarantine(s, operator(), limit, None))
    for e in page[0]:
        released = f"{_moment(e.released_at)} by {e.released_by}" if e.released_at else ""
        table.add_row(
            str(e.seq), _moment(e.detected_at), e.tenant, e.file_id or "(refused upload)",
            e.signature, e.sha256[:16] + "…", str(e.size), released,
        )  # fmt: skip
    (console if console.is_terminal else Console(width=240)).print(table)


@quarantine_app.command("release")
def quarantine_release(file_id: str, tenant: str = DEFAULT_TENANT) -> None:
    """Serve a file found infected (or whose scan failed) as clean: an override, audited."""
    try:
        _with_services(lambda s: quarantine.release_file(s, operator(tenant), file_id))
    except ChatMediaError as e:
        err_console.print(e.message)
        raise typer.Exit(1) from None
    console.print(f"released {file_id}")


@quarantine_app.command("purge")
def quarantine_purge() -> None:
    """Delete every quarantined file and the kept bytes of refused uploads (the records
    stay, so the same bytes are still refused)."""
    count = _with_services(quarantine.purge_quarantine)
    console.print(f"purged {count} quarantined files and kept uploads")


@contextmanager
def _client(server: str, key: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server, headers=headers, timeout=httpx.Timeout(60.0)) as client:
        yield client


def _progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )


def _fail(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.reason_phrase
    err_console.print(f"[red]error {response.status_code}:[/red] {message}")
    raise typer.Exit(1)


class _ProgressReader:
    """A file whose reads advance a progress bar (httpx reads upload files in chunks)."""

    def __init__(self, file: BinaryIO, progress: Progress, task: Any) -> None:
        self._file, self._progress, self._task = file, progress, task

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._progress.advance(self._task, len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


@app.command("upload")
def upload_cmd(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    server: ServerOption = "http://127.0.0.1:8080",
    key: KeyOption = "",
    conversation: Annotated[str | None, typer.Option(help="Conversation id.")] = None,
) -> None:
    """Upload a file; prints its File JSON. Files over 8 MiB go up resumably (tus): run
    the same command again after an interruption and it goes on where it stopped."""
    data = {"conversationId": conversation} if conversation else {}
    with _client(server, key) as client, _progress() as progress:
        task = progress.add_task(path.name, total=path.stat().st_size)
        if path.stat().st_size > resumable.CHUNK_SIZE:
            try:
                file_id = resumable.upload(
                    client, path, {"filename": path.name} | data,
                    lambda n: progress.advance(task, n),
                )  # fmt: skip
            except resumable.UploadFailed as e:
                _fail(e.response)
            response = client.get(f"/v1/files/{file_id}")
        else:
            with path.open("rb") as file:
                reader = cast(BinaryIO, _ProgressReader(file, progress, task))
                files = {"file": (path.name, reader)}
                response = client.post("/v1/files", files=files, data=data)
    _fail(response)
    console.print_json(response.text)


@app.command("import")
def import_cmd(
    url: str,
    server: ServerOption = "http://127.0.0.1:8080",
    key: KeyOption = "",
    conversation: Annotated[str | None, typer.Option(help="Conversation id.")] = None,
    channel: Annotated[str | None, typer.Option(help="Channel profile to fetch with.")] = None,
    name: Annotated[str | None, typer.Option(help="File name (default: the source's).")] = None,
) -> None:
    """Have the server fetch a URL and store it; prints the File."""
    body = {"sourceUrl": url, "conversationId": conversation, "channel": channel, "fileName": name}
    with _client(server, key) as client:
        response = client.post("/v1/files/import", json={k: v for k, v in body.items() if v})
    _fail(response)
    console.print_json(response.text)


@app.command("download")
def download_cmd(
    file_id: str,
    server: ServerOption = "http://127.0.0.1:8080",
    key: KeyOption = "",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Where to write.")] = None,
) -> None:
    """Download a file's bytes (to its own name in this folder unless -o is given)."""
    with _client(server, key) as client:
        meta = client.get(f"/v1/files/{file_id}")
        _fail(meta)
        target = output or Path(meta.json()["name"])
        partial = target.with_name(target.name + ".part")
        with (
            client.stream("GET", f"/v1/files/{file_id}/content") as response,
            _progress() as progress,
        ):
            _fail(response)
            task = progress.add_task(target.name, total=int(response.headers["content-length"]))
            with partial.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    progress.advance(task, len(chunk))
        partial.replace(target)
    console.print(f"saved {target}")
