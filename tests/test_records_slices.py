"""A provider page larger than the client's limit, handed out in slices by the
records API: every record once, whatever the page holds (ids repeated or
missing, the page changing between slices)."""

from __future__ import annotations

import asyncio

import pytest

from hub.config import Settings
from hub.models import Connection
from hub.plugins import PluginRegistry
from hub.runtime import Hub
from hub.services.records import RecordService
from hub.types import EntitySchema, Page, ProviderError, ProviderInfo
from tests.conftest import module_plugin

INFO = ProviderInfo(name="canned", label="Canned", category="test", auth_type="api_key",
                    urls={"api": "https://canned.invalid"})


def service(tmp_path, pages: dict[str | None, Page], kept_seconds: float = 0) -> tuple[RecordService, list]:
    """A records service of a provider answering ``pages`` (by cursor) as they are then;
    each slice asks the provider again unless ``kept_seconds`` (the pages
    changing between slices are what most tests here are about)."""
    calls: list = []

    def list_records(cursor):
        calls.append(cursor)
        return pages[cursor]

    registry = PluginRegistry()
    registry.register(module_plugin("canned_plugin", INFO, [EntitySchema("things", "Things", fixed_page_size=100)],
                                    list_records=list_records), "canned")
    hub = Hub(Settings(data_dir=tmp_path, secret_key="k", slice_cache_seconds=kept_seconds), registry)
    connection = Connection(id="c1", organization_id="o", provider="canned", category="test", name="c")
    return RecordService(hub, connection), calls


def drain(records: RecordService, limit: int, between=None, max_pages: int = 50) -> list[Page]:
    async def run() -> list[Page]:
        pages, cursor = [], None
        for _ in range(max_pages):
            page = await records.list("things", cursor, limit)
            pages.append(page)
            if between:
                between(len(pages))
            cursor = page.next_cursor
            if not cursor:
                return pages
        raise AssertionError(f"no end after {max_pages} pages: {[[r.get('id') for r in p.records] for p in pages]}")

    return asyncio.run(run())


def things(*ids):
    return [{"id": i, "n": n} for n, i in enumerate(ids)]


def handed(pages):
    return [r["n"] if "n" in r else r["id"] for p in pages for r in p.records]


def test_an_id_repeated_in_a_page_is_continued_after_the_one_handed_out(tmp_path):
    records, _ = service(tmp_path, {None: Page(records=things("a", "b", "c", "d", "e", "c", "f", "g"))})
    pages = drain(records, 3)
    assert handed(pages) == list(range(8)) and not any(p.restarted for p in pages)  # (it looped on the first c)


def test_a_record_without_its_id_cannot_be_sliced_past(tmp_path):
    records, _ = service(tmp_path, {None: Page(records=[{"t": n} for n in range(7)])})
    with pytest.raises(ProviderError, match="without its 'id'"):
        drain(records, 3)  # (it handed out the same records for ever)


def test_the_last_record_handed_out_gone_restarts_the_listing_from_its_first_record(tmp_path):
    pages_by_cursor = {None: Page(records=things("a", "b", "c"), next_cursor="p2"),
                       "p2": Page(records=things("d", "e", "f", "g", "h", "i", "j"))}
    records, calls = service(tmp_path, pages_by_cursor)

    def remove_f(n):
        if n == 2:  # [a b c], [d e f] handed out: f goes
            pages_by_cursor["p2"] = Page(records=things("d", "e", "g", "h", "i", "j"))

    pages = drain(records, 3, remove_f)
    assert [p.restarted for p in pages] == [False, False, True, False, False]
    assert [r["id"] for r in pages[2].records] == ["a", "b", "c"] and calls[3] is None  # from the very start


def test_a_restarted_first_page_is_not_restarted_again_by_its_slices(tmp_path):
    records, _ = service(tmp_path, {None: Page(records=things(*"abcdefg"), restarted=True)})
    pages = drain(records, 3)
    assert handed(pages) == list(range(7)) and [p.restarted for p in pages] == [True, False, False]


def test_a_page_different_on_every_call_is_an_error_not_an_endless_listing(tmp_path):
    calls = iter(range(1000))
    class Fresh(dict):
        def __missing__(self, cursor):
            batch = next(calls)
            return Page(records=things(*[f"{batch}-{i}" for i in range(7)]))

    records, _ = service(tmp_path, Fresh())
    with pytest.raises(ProviderError, match="differently on every call"):
        drain(records, 3)


def test_a_repeated_id_inserted_before_the_cut_restarts_rather_than_repeats(tmp_path):
    pages_by_cursor = {None: Page(records=things("a", "b", "c", "d"))}
    records, _ = service(tmp_path, pages_by_cursor)

    def insert_b(n):
        if n == 1:
            pages_by_cursor[None] = Page(records=[{"id": "b", "n": 9}] + things("a", "b", "c", "d"))

    pages = drain(records, 2, insert_b)
    assert pages[1].restarted and [r["id"] for r in pages[1].records] == ["b", "a"]  # said, not silently again


def test_a_page_handed_out_in_slices_is_asked_of_the_provider_once_and_is_one_snapshot(tmp_path):
    pages_by_cursor = {None: Page(records=things(*"abcdefg"), next_cursor="p2"), "p2": Page(records=things("h"))}
    records, calls = service(tmp_path, pages_by_cursor, kept_seconds=30)

    def remove_b(n):
        if n == 1:
            pages_by_cursor[None] = Page(records=things("a", "c", "d", "e", "f", "g"), next_cursor="p2")

    pages = drain(records, 3, remove_b)
    assert [[r["id"] for r in p.records] for p in pages] == [["a", "b", "c"], ["d", "e", "f"], ["g"], ["h"]]
    assert calls == [None, "p2"] and not any(p.restarted for p in pages)


def test_a_kept_page_is_asked_again_once_its_time_is_up(tmp_path):
    records, calls = service(tmp_path, {None: Page(records=things(*"abcdefg"))}, kept_seconds=30)

    def time_up(n):
        if n == 1:
            pages = records.hub.slice_pages
            pages.update({key: (0.0, page) for key, (_, page) in pages.items()})

    assert handed(drain(records, 3, time_up)) == list(range(7)) and calls == [None, None]


def test_kept_pages_are_bounded_by_their_records_and_dropped_once_past_their_time(tmp_path, monkeypatch):
    import hub.services.records as records_module

    monkeypatch.setattr(records_module, "SLICED_RECORDS_KEPT", 10)
    pages_by_cursor = {None: Page(records=things(*"abcdefg"), next_cursor="p2"),
                       "p2": Page(records=things(*"hijklmn"))}
    records, _ = service(tmp_path, pages_by_cursor, kept_seconds=30)
    drain(records, 3)
    kept = records.hub.slice_pages
    assert [key[2] for key in kept] == ["p2"]  # 7 + 7 records are more than 10: the first page went
    kept.update({key: (0.0, page) for key, (_, page) in kept.items()})
    assert records._kept_page(next(iter(kept))[1:]) is None and not kept  # past its time: dropped when asked
