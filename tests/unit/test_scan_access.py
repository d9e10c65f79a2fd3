"""The access rules of scanning (chatmedia.access.content), over every scan state,
failure mode and principal: content only once it may be served, a quarantined file shown
to admins alone and its content to no one."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from chatmedia.access.content import check_content, shows
from chatmedia.access.principal import SCOPES, Principal
from chatmedia.errors import FileNotFound, FileNotReady
from chatmedia.models import FileRecord, ScanState

STATES = st.one_of(
    st.none(),
    st.builds(
        ScanState,
        status=st.sampled_from(["pending", "clean", "infected", "error", "skipped"]),
        signature=st.none() | st.text(min_size=1, max_size=20),
    ),
)
PRINCIPALS = st.none() | st.builds(
    Principal,
    key_id=st.just("k"),
    key_name=st.just("k"),
    scopes=st.frozensets(st.sampled_from(SCOPES)),
    tenant=st.just("default"),
)


def record(scan: ScanState | None) -> FileRecord:
    return FileRecord(
        id="f1", type="HOSTED", name="a.png", stored_name="a.png", content_type="image/png",
        size=1, sha256="0" * 64, conversation_id=None, properties={},
        created_at=datetime(2026, 1, 1, tzinfo=UTC), tenant="default", scan=scan,
    )  # fmt: skip


def outcome(scan: ScanState | None, fail_open: bool) -> str:
    try:
        check_content(record(scan), fail_open)
    except FileNotFound:
        return "not found"
    except FileNotReady:
        return "not ready"
    return "served"


@given(STATES, st.booleans())
def test_content_is_served_only_once_its_scan_allows(
    scan: ScanState | None, fail_open: bool
) -> None:
    status = scan.status if scan else None
    expected = {
        None: "served", "clean": "served", "skipped": "served", "infected": "not found",
        "pending": "not ready", "error": "served" if fail_open else "not ready",
    }[status]  # fmt: skip
    assert outcome(scan, fail_open) == expected


@given(STATES, PRINCIPALS)
def test_a_quarantined_file_shows_to_admins_alone(
    scan: ScanState | None, principal: Principal | None
) -> None:
    admin = principal is not None and "admin" in principal.scopes
    quarantined = scan is not None and scan.status == "infected"
    assert shows(principal, record(scan)) == (admin or not quarantined)
