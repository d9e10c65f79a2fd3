"""A local source server for import tests (127.0.0.1 only), and a listener that only counts
the connections it is offered."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.clamdserver import EICAR
from tests.conftest import PDF_BYTES, png_bytes

PNG = png_bytes(16, 16)
D360_KEY = "d360-test-key"
CLIENT_ID = "connector"
CLIENT_SECRET = "s3cret/with+chars"
SLOW_BODY = PNG + bytes(32 * 1024 - len(PNG))
# Expands from about 50 KiB to 50 MiB: a bomb for a 5 MiB limit.
BOMB = gzip.compress(bytes(50 * 1024 * 1024), compresslevel=9)


class SourceServer:
    """Paths and what they do:

    /file.png, /file.pdf      a file; /named a PDF with a Content-Disposition filename
    /eicar.txt                the EICAR test file (tests/clamdserver.py)
    /redirect/N               N redirects, the last to /file.png
    /to?url=U                 one redirect to U
    /slow                     a PNG of 32 KiB in 2 KiB pieces, 0.1 s apart
    /stall                    half the PNG, then silence for 30 s
    /lying                    announces 1000 bytes, sends 100 and closes
    /bomb                     a gzip body that expands to 50 MiB
    /big                      announces 10 GiB
    /status/N                 answers N
    /d360/media               the PNG, only with the right D360-API-KEY
    /oauth/token              client-credentials token endpoint (POST, HTTP Basic)
    /protected                the PDF, only with a token from /oauth/token
    /headers                  the request's headers as JSON
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.hits: Counter[str] = Counter()
        self.headers_seen: list[dict[str, str]] = []
        self.tokens_issued = 0
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer((host, 0), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.base = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> SourceServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return self.base + path


def _handler_for(source: SourceServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            source.hits[path] += 1
            source.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
            route = _GET_ROUTES.get(path) or _prefix_route(path)
            route(self)

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            source.hits[path] += 1
            if path != "/oauth/token":
                return self.answer(405, b"")
            return self.token()

        def answer(
            self, status: int, body: bytes, content_type: str = "text/plain", **extra: str
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def file_png(self) -> None:
            self.answer(200, PNG, "image/png")

        def file_pdf(self) -> None:
            self.answer(200, PDF_BYTES, "application/pdf")

        def eicar(self) -> None:
            self.answer(200, EICAR, "text/plain")

        def named(self) -> None:
            disposition = "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
            self.answer(200, PDF_BYTES, "application/pdf", Content_Disposition=disposition)

        def redirect(self) -> None:
            left = int(self.path.rsplit("/", 1)[-1])
            target = "/file.png" if left <= 1 else f"/redirect/{left - 1}"
            self.answer(302, b"", Location=target)

        def to(self) -> None:
            target = parse_qs(urlsplit(self.path).query)["url"][0]
            self.answer(302, b"", Location=target)

        def slow(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(SLOW_BODY)))
            self.end_headers()
            for i in range(0, len(SLOW_BODY), 2048):
                self.wfile.write(SLOW_BODY[i : i + 2048])
                self.wfile.flush()
                time.sleep(0.1)

        def stall(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG[: len(PNG) // 2])
            self.wfile.flush()
            time.sleep(30)

        def lying(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(PNG[:100])
            self.wfile.flush()
            self.close_connection = True

        def bomb(self) -> None:
            self.answer(200, BOMB, "application/octet-stream", Content_Encoding="gzip")

        def big(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(10 * 1024**3))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(PNG)
            self.close_connection = True

        def status(self) -> None:
            self.answer(int(self.path.rsplit("/", 1)[-1]), b"nope")

        def d360(self) -> None:
            if self.headers.get("D360-API-KEY") != D360_KEY:
                return self.answer(401, b"missing or wrong D360-API-KEY")
            return self.file_png()

        def token(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            expected = (
                "Basic "
                + base64.b64encode(
                    f"{CLIENT_ID}:{CLIENT_SECRET.replace('/', '%2F').replace('+', '%2B')}".encode()
                ).decode()
            )
            if self.headers.get("Authorization") != expected or form.get("grant_type") != [
                "client_credentials"
            ]:
                return self.answer(401, b'{"error": "invalid_client"}', "application/json")
            source.tokens_issued += 1
            body = {"access_token": f"tok-{source.tokens_issued}", "expires_in": 3600}
            return self.answer(200, json.dumps(body).encode(), "application/json")

        def protected(self) -> None:
            valid = {f"Bearer tok-{n}" for n in range(1, source.tokens_issued + 1)}
            if self.headers.get("Authorization") not in valid:
                return self.answer(401, b"no token")
            return self.file_pdf()

        def echo_headers(self) -> None:
            body = json.dumps(dict(self.headers.items())).encode()
            self.answer(200, body, "application/json")

        def not_found(self) -> None:
            self.answer(404, b"not here")

    _GET_ROUTES = {
        "/file.png": Handler.file_png,
        "/file.pdf": Handler.file_pdf,
        "/eicar.txt": Handler.eicar,
        "/named": Handler.named,
        "/to": Handler.to,
        "/slow": Handler.slow,
        "/stall": Handler.stall,
        "/lying": Handler.lying,
        "/bomb": Handler.bomb,
        "/big": Handler.big,
        "/d360/media": Handler.d360,
        "/protected": Handler.protected,
        "/headers": Handler.echo_headers,
    }

    def _prefix_route(path: str):  # type: ignore[no-untyped-def]
        if path.startswith("/redirect/"):
            return Handler.redirect
        if path.startswith("/status/"):
            return Handler.status
        return Handler.not_found

    return Handler


class Listener:
    """A TCP listener that accepts and counts connections and sends nothing."""

    def __init__(self, host: str, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._socket.listen(16)
        self._socket.settimeout(0.1)
        self.port: int = self._socket.getsockname()[1]
        self.connections = 0
        self._running = True
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._running = False
        self._thread.join(timeout=2)
        self._socket.close()

    def _accept(self) -> None:
        while self._running:
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            connection.close()


class AnsweringProxy:
    """An HTTP proxy on 127.0.0.1 that connects nowhere: it answers every plain-HTTP GET
    itself with a PNG, every POST with 204, and refuses CONNECT (HTTPS) with 502. Servers
    under fuzzing go through it, so that no generated URL is ever fetched for real."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(200, PNG)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer(204, b"")

            def do_CONNECT(self) -> None:
                self._answer(502, b"")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> AnsweringProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
