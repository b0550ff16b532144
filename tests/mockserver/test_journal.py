"""The request journal and its masking, without HTTP (the route is in test_app.py)."""

from __future__ import annotations

import pytest

from mockserver.journal import Journal, mask_headers, mask_secret


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("Bearer sk-abcdef1234", "Bearer ****1234"),
        ("bearer  padded-key-9876 ", "bearer ****9876"),
        ("Basic dXNlcjpwYXNz", "Basic ****YXNz"),
        ("rawtoken5678", "****5678"),
        ("Bearer abcd", "Bearer ****"),
        ("Bearer", "****arer"),  # a bare value is all credential
        ("", "****"),
    ],
)
def test_mask_secret(value: str, masked: str) -> None:
    assert mask_secret(value) == masked


def test_mask_headers_lowercases_joins_and_masks() -> None:
    headers = mask_headers(
        [
            ("Authorization", "Bearer sk-secret-key-42ab"),
            ("X-Api-Key", "another-secret-99zz"),
            ("Accept", "audio/mpeg"),
            ("accept", "*/*"),
        ]
    )
    assert headers == {
        "authorization": "Bearer ****42ab",
        "x-api-key": "****99zz",
        "accept": "audio/mpeg, */*",
    }


def test_entries_are_kept_oldest_first_with_sequence_numbers() -> None:
    journal = Journal()
    for path in ("/a", "/b", "/c"):
        journal.record({"path": path})
    entries = journal.entries()
    assert [e["path"] for e in entries] == ["/a", "/b", "/c"]
    assert [e["seq"] for e in entries] == [1, 2, 3]


def test_journal_is_bounded() -> None:
    journal = Journal(maxlen=2)
    for n in range(5):
        journal.record({"n": n})
    assert [e["n"] for e in journal.entries()] == [3, 4]
    assert (len(journal), journal.maxlen) == (2, 2)


def test_entries_are_copies() -> None:
    journal = Journal()
    journal.record({"json": {"text": "hi"}})
    journal.entries()[0]["json"]["text"] = "changed"
    assert journal.entries()[0]["json"] == {"text": "hi"}


def test_annotate_updates_a_stored_entry() -> None:
    journal = Journal()
    entry = journal.record({"status": None})
    journal.annotate(entry, status=201)
    assert journal.entries()[0]["status"] == 201


def test_clear_keeps_sequence_numbers_increasing() -> None:
    journal = Journal()
    journal.record({})
    journal.clear()
    assert journal.entries() == []
    assert journal.record({})["seq"] == 2
