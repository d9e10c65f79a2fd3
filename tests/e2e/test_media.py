"""Media through a real `chatmedia serve`, with real media made by the tests
(tests/media_files.py): the fields a chat UI needs, previews of the right size and way up,
location taken out of photos without touching their pixels, previews made on demand once,
decoders that fail or explode costing nothing but their own file, and previews that go
with their file."""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import Server, replay, wait_for
from tests.media_files import BLUE, RED, MediaFiles, colour_at, looks, shared_media

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaFiles:
    return shared_media(tmp_path_factory)


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server]) -> Server:
    return start_server(max_upload_size="32MiB")


def upload(server: Server, path: Path | bytes, conversation: str, name: str = "") -> Any:
    body = path.read_bytes() if isinstance(path, Path) else path
    name = name or (path.name if isinstance(path, Path) else "file.bin")
    with server.client(headers=server.auth) as client:
        answer = client.post(
            "/v1/files", files={"file": (name, body)}, data={"conversationId": conversation}
        )
    assert answer.status_code == 201, answer.text
    return answer.json()


def processed(server: Server, file: dict[str, Any]) -> dict[str, Any]:
    """The File once its media job has run."""
    with server.client(headers=server.auth) as client:

        def done() -> dict[str, Any] | None:
            now = client.get(f"/v1/files/{file['id']}").json()
            return now if now["media"]["processing"] != "pending" else None

        result: dict[str, Any] = wait_for(done)
        return result


def preview(server: Server, file_id: str, size: int = 320) -> httpx.Response:
    with server.client(headers=server.auth) as client:
        return client.get(f"/v1/files/{file_id}/preview", params={"size": size})


def test_a_phone_photo_is_stripped_of_its_location_and_previewed_upright(
    server: Server, media: MediaFiles
) -> None:
    original = media.photo(6).read_bytes()
    file = upload(server, media.photo(6), "media-photo")
    # A photo is described before the upload answers: the File says it all at once.
    assert file["media"]["processing"] == "done"
    assert (file["media"]["width"], file["media"]["height"]) == (120, 80)  # as displayed
    assert file["metadataStripped"] is True
    with server.client(headers=server.auth) as client:
        stored = client.get(f"/v1/files/{file['id']}/content").content
    assert file["size"] == len(stored)
    assert len(stored) <= len(original)
    with Image.open(io.BytesIO(stored)) as kept, Image.open(io.BytesIO(original)) as sent:
        assert not kept.getexif().get_ifd(0x8825)  # no GPS
        assert kept.getexif()[0x0112] == 6  # the orientation stays
        assert kept.tobytes() == sent.tobytes()  # not re-encoded
    done = processed(server, file)
    media_fields = done["media"]
    assert media_fields["processing"] == "done"
    assert (media_fields["width"], media_fields["height"]) == (120, 80)
    assert len(media_fields["blurhash"]) > 6
    assert [p["size"] for p in media_fields["previews"]] == [320, 800]
    answer = preview(server, file["id"])
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(answer.content)) as small:
        assert small.size == (120, 80)  # never enlarged; upright
        assert not small.getexif()  # no metadata at all
    assert looks(colour_at(answer.content, 0.1, 0.1), RED)
    assert looks(colour_at(answer.content, 0.9, 0.9), BLUE)
    # A preview URL from the File works without a key, like its url.
    assert httpx.get(media_fields["previews"][0]["url"]).content == answer.content
    # Another size snaps up; the one event told of it all, and no file.updated follows.
    assert preview(server, file["id"], 500).content == preview(server, file["id"], 800).content
    upload(server, b"next", "media-photo", "next.txt")
    with server.client(headers=server.auth) as client:
        events = replay(client, "media-photo", 2)
    assert [e.event for e in events] == ["file.created", "file.created"]
    assert events[0].data["data"]["media"] == done["media"]


def test_a_large_photo_gets_previews_that_fit_their_boxes(
    server: Server, media: MediaFiles
) -> None:
    done = processed(server, upload(server, media.big_photo, "media-big"))
    assert (done["media"]["width"], done["media"]["height"]) == (3000, 4000)  # EXIF 6
    boxes = {p["size"]: (p["width"], p["height"]) for p in done["media"]["previews"]}
    assert boxes == {320: (240, 320), 800: (600, 800)}
    with Image.open(io.BytesIO(preview(server, done["id"], 800).content)) as big:
        assert big.size == (600, 800)


@pytest.mark.parametrize(
    ("kind", "content_type"),
    [("gif", "image/jpeg"), ("transparent_png", "image/png"), ("webp", "image/jpeg")],
)
def test_other_images(server: Server, media: MediaFiles, kind: str, content_type: str) -> None:
    done = processed(server, upload(server, getattr(media, kind), f"media-{kind}"))
    assert done["media"]["processing"] == "done"
    assert {p["contentType"] for p in done["media"]["previews"]} == {content_type}
    assert preview(server, done["id"]).headers["content-type"] == content_type


def test_a_phone_video_gets_a_poster_the_right_way_up(server: Server, media: MediaFiles) -> None:
    done = processed(server, upload(server, media.phone_video, "media-video"))
    fields = done["media"]
    assert fields["processing"] == "done"
    assert (fields["width"], fields["height"]) == (180, 320)  # turned by its display matrix
    assert fields["durationMs"] > 0
    assert "blurhash" in fields
    poster = preview(server, done["id"])
    assert poster.status_code == 200
    assert looks(colour_at(poster.content, 0.5, 0.1), RED)  # the top half is red


def test_a_voice_note_gets_a_duration_and_a_waveform(server: Server, media: MediaFiles) -> None:
    done = processed(server, upload(server, media.voice_note, "media-voice"))
    fields = done["media"]
    assert fields["processing"] == "done"
    assert 3500 <= fields["durationMs"] <= 4500
    assert len(fields["waveform"]) == 64
    assert all(0 <= level <= 100 for level in fields["waveform"])
    assert max(fields["waveform"]) == 100
    assert "previews" not in fields
    answer = preview(server, done["id"])
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "preview_not_available"


def test_a_pdf_gets_its_pages_and_a_first_page_preview(server: Server, media: MediaFiles) -> None:
    done = processed(server, upload(server, media.pdf, "media-pdf"))
    assert done["media"]["pages"] == 2
    assert preview(server, done["id"]).status_code == 200


def test_bombs_and_broken_files_fail_alone_while_the_server_serves(
    server: Server, media: MediaFiles
) -> None:
    bad = [media.bomb(), media.truncated(media.phone_video, 0.3), media.corrupted(media.pdf),
           media.corrupted(media.big_photo)]  # fmt: skip
    files = [upload(server, path, "media-bad") for path in bad]
    assert all("media" in file for file in files), [f["contentType"] for f in files]
    for file in files:
        assert processed(server, file)["media"]["processing"] == "failed", file["name"]
        assert preview(server, file["id"]).status_code == 404
    # The server still serves, and still makes previews.
    assert (
        processed(server, upload(server, media.photo(1), "media-after"))["media"]["processing"]
        == "done"
    )


def test_a_preview_asked_for_at_once_by_many_is_made_once(
    start_server: Callable[..., Server], media: MediaFiles
) -> None:
    # Right after the upload (not described in it here), the job and twenty requests race
    # for it: one of them makes it (the on-demand path alone: tests/contract/
    # test_media_pipeline.py).
    server = start_server(media_inline_timeout="0")
    body = media.photo(3).read_bytes() + secrets.token_bytes(8)  # bytes no other test sent
    file = upload(server, body, "media-demand", "demand.jpg")
    url = f"{server.url}/v1/files/{file['id']}/preview?size=320"
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: httpx.get(url, headers=server.auth, timeout=30),
                                range(20)))  # fmt: skip
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    sha256 = file["sha256"]
    described = [line for line in server.log.read_text().splitlines()
                 if f"blob {sha256} described" in line]  # fmt: skip
    assert len(described) == 1


def test_previews_go_with_their_file(server: Server, media: MediaFiles) -> None:
    body = media.photo(8).read_bytes() + secrets.token_bytes(8)
    done = processed(server, upload(server, body, "media-gone", "gone.jpg"))
    assert preview(server, done["id"]).status_code == 200
    before = set(server.stored_blobs())
    with server.client(headers=server.auth) as client:
        assert client.delete(f"/v1/files/{done['id']}").status_code == 204
    gone = before - set(server.stored_blobs())
    assert len(gone) == 3  # the photo and its two previews
    assert preview(server, done["id"]).status_code == 404
