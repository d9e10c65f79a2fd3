"""How a `chatmedia` command gets its settings and services, and says in one line what
stops it from running (no traceback)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console

from chatmedia.config import ConfigError, Settings, load_settings
from chatmedia.db.migrate import SchemaBehind
from chatmedia.services import BACKEND_OUTAGES, Services, open_services

err_console = Console(stderr=True)
T = TypeVar("T")
# What stops a command from working at all: said in one line, without a traceback.
CANNOT_RUN: tuple[type[Exception], ...] = (SchemaBehind, *BACKEND_OUTAGES)


def settings_or_exit() -> Settings:
    """The settings; a configuration error is printed and ends the command (status 2)."""
    try:
        return load_settings()
    except ConfigError as e:
        err_console.print(f"[red]configuration error:[/red] {e}")
        raise typer.Exit(2) from None


def with_services(work: Callable[[Services], Awaitable[T]]) -> T:
    """Run `work` with the services open; a database or store that cannot be used is
    printed and ends the command (status 1)."""

    async def run() -> T:
        services = open_services(settings_or_exit())
        try:
            return await work(services)
        finally:
            await services.close()

    try:
        return asyncio.run(run())
    except CANNOT_RUN as e:
        err_console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
