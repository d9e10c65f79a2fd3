"""The download path's record cache: a record changed in the database is never served from
a cache again once the change committed — in this process, in another process of the node
(through the shared ring), or after a read that raced with the change — and what is kept
stays bounded."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatmedia.caching import ring as ring_module
from chatmedia.caching.records import RecordCache
from chatmedia.caching.ring import ChangeRing
from chatmedia.db.changes import FILE, KEY
from chatmedia.db.keys import ActiveKey
from chatmedia.models import FileRecord

NOW = datetime(2026, 12, 6, tzinfo=UTC)
IDS = [f"file{n}" for n in range(4)]


def record(file_id: str, generation: int = 0) -> FileRecord:
    return FileRecord(
        id=file_id, type="HOSTED", name="a.png", stored_name=f"c_{file_id}.png",
        content_type="image/png", size=1, sha256="0" * 64, conversation_id="c",
        properties={}, created_at=NOW, tenant="default", link_generation=generation,
    )  # fmt: skip


# A reader's steps (a lookup missing, reading the row, keeping it) interleaved with
# writers' (changing the row, then publishing the change at commit).
_STEP = st.one_of(
    st.tuples(st.just("begin_read"), st.sampled_from(IDS)),
    st.tuples(st.just("finish_read"), st.integers(0, 3)),
    st.tuples(st.just("change"), st.sampled_from(IDS)),
    st.tuples(st.just("commit"), st.integers(0, 3)),
)


@settings(max_examples=300)
@given(steps=st.lists(_STEP, max_size=60), size=st.integers(1, 4))
def test_a_cached_record_is_never_older_than_the_last_commit(
    steps: list[tuple[str, object]], size: int
) -> None:
    ring = ChangeRing()
    cache = RecordCache(ring, size)
    committed = dict.fromkeys(IDS, 0)  # the database: each row's generation
    uncommitted: list[str] = []  # changed, not yet committed (readers see the old row)
    reads: list[tuple[FileRecord, tuple[int, int]]] = []  # read, not yet kept
    for action, arg in steps:
        if action == "begin_read":
            assert isinstance(arg, str)
            version = cache.version()
            reads.append((record(arg, committed[arg]), version))
        elif action == "finish_read" and reads:
            assert isinstance(arg, int)
            read, version = reads.pop(arg % len(reads))
            cache.keep_file(read, version)
        elif action == "change":
            assert isinstance(arg, str)
            uncommitted.append(arg)
        elif action == "commit" and uncommitted:
            assert isinstance(arg, int)
            file_id = uncommitted.pop(arg % len(uncommitted))
            committed[file_id] += 1
            ring.publish([FILE + file_id])
        for file_id in IDS:
            cached = cache.file(file_id)
            assert cached is None or cached.link_generation == committed[file_id]
            by_name = cache.file_named(f"c_{file_id}.png")
            assert by_name is None or by_name.link_generation == committed[file_id]
    assert sum(cache.file(i) is not None for i in IDS) <= size


def test_a_reader_far_behind_forgets_everything() -> None:
    ring = ChangeRing()
    cache = RecordCache(ring, 10)
    cache.keep_file(record("file0"), cache.version())
    assert cache.file("file0") is not None
    ring.publish(f"{FILE}other{n}" for n in range(ring_module.SLOTS + 1))
    assert cache.file("file0") is None  # the ring lapped this process: it cannot know


def test_keys_are_forgotten_when_revoked() -> None:
    ring = ChangeRing()
    cache = RecordCache(ring, 10)
    key = ActiveKey("key_1", "k", ("admin",), None, None, None, None)
    cache.keep_key("hash", key, cache.version())
    assert cache.key("hash") == key
    ring.publish([KEY + "key_2"])
    assert cache.key("hash") == key
    ring.publish([KEY + "key_1"])
    assert cache.key("hash") is None


def test_an_untrusted_cache_answers_nothing() -> None:
    cache = RecordCache(ChangeRing(), 10, trusted=False)
    cache.keep_file(record("file0"), cache.version())
    assert cache.file("file0") is None
    cache.trust_until(float("inf"))
    version = cache.version()
    cache.keep_file(record("file0"), version)
    assert cache.file("file0") == record("file0")
    cache.forget_remote([FILE + "file0"])
    assert cache.file("file0") is None
    cache.keep_file(record("file0"), version)  # read before that change: not kept
    assert cache.file("file0") is None
    cache.keep_file(record("file0", 1), cache.version())
    cache.distrust()
    assert cache.file("file0") is None


def test_nothing_is_kept_when_the_cache_is_off() -> None:
    cache = RecordCache(ChangeRing(), 0)
    cache.keep_file(record("file0"), cache.version())
    cache.keep_key("hash", ActiveKey("key_1", "k", (), None, None, None, None), cache.version())
    assert cache.file("file0") is None
    assert cache.key("hash") is None


def test_names_must_fit_a_slot() -> None:
    with pytest.raises(ValueError, match="too long"):
        ChangeRing().publish(["f:" + "x" * 62])


def _publish(path: str, file_id: str) -> None:
    ChangeRing(path).publish([FILE + file_id])


def test_another_process_of_the_node_is_heard_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "changes")
    cache = RecordCache(ChangeRing(path), 10)
    cache.keep_file(record("file0"), cache.version())
    cache.keep_file(record("file1"), cache.version())
    other = multiprocessing.get_context("spawn").Process(target=_publish, args=(path, "file0"))
    other.start()
    other.join(30)
    assert other.exitcode == 0
    assert cache.file("file0") is None
    assert cache.file("file1") == record("file1")
    assert replace(record("file1")) == cache.file_named("c_file1.png")
