"""The server process: granian serving `chatmedia.http.app:create_app`.

`chatmedia serve` execs this module instead of starting granian itself. granian forks its
workers from this process, so whatever this process has imported every worker carries:
keeping it to the settings and granian saves each worker the CLI's and Alembic's memory.
"""

from __future__ import annotations

import logging
import os
import sys

from granian import Granian
from granian.constants import Interfaces
from granian.log import LogLevels

from chatmedia.caching import ring
from chatmedia.config import ConfigError, Settings, load_settings
from chatmedia.fairuse import counters
from chatmedia.sharedmap import create_node_file

WORKER_KILL_TIMEOUT = 10  # seconds a worker gets to stop before it is killed


def main() -> None:
    """Serve until stopped, with the settings from the environment."""
    try:
        settings = load_settings()
    except ConfigError as e:
        sys.exit(f"configuration error: {e}")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # The multipart parser logs each malformed body it meets, a client's mistake that is
    # answered 400 already.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    if settings.compat_download == "open":
        logging.getLogger("chatmedia").warning(
            "CHATMEDIA_COMPAT_DOWNLOAD=open: file-engine downloads need only a file's name,"
            " <conversationId>_<filename>, which can be guessed; set it to signed or key"
            " once connectors use the url the upload answers with (docs/deploy.md)"
        )
    print(
        f"chatmedia serving on http://{settings.host}:{settings.port}"
        f" (data in {settings.data_dir})",
        flush=True,
    )
    # What every worker shares: the rate-limit counters (chatmedia.fairuse.counters), and
    # the log of changed records, unless the workers keep it beside a SQLite database.
    shared = {
        counters.ENV_NAME: counters.create_counters_file(),
        ring.ENV_NAME: create_node_file("chatmedia-changes-", ring.SIZE),
    }
    os.environ.update(shared)
    try:
        _serve(settings)
    finally:
        for path in shared.values():
            os.unlink(path)


def _serve(settings: Settings) -> None:
    Granian(
        "chatmedia.http.app:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        # Rust threads per worker for the network I/O: a second one keeps several large
        # downloads (sent by granian from the file) from queueing behind each other.
        runtime_threads=settings.io_threads,
        log_level=LogLevels(settings.log_level),
        # A worker stopped while still starting up may miss SIGTERM; without a timeout the
        # main process would wait for it forever.
        workers_kill_timeout=WORKER_KILL_TIMEOUT,
    ).serve()


if __name__ == "__main__":
    main()
