"""Splitting events into PutEvents calls: the 10-entry and 256 KB limits, one event per execution per call, and
executions that failed before sent after the others."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from billing.outbox.chunking import (
    MAX_CALL_BYTES,
    MAX_ENTRIES_PER_CALL,
    entry_size,
    next_chunk,
    next_wave,
    retried_last,
    too_large,
)
from billing.outbox.events import OutboundEvent

TENANT = uuid4()
_ids = itertools.count(1)


def event(
    aggregate_id: UUID | None = None, *, detail: str = "{}", detail_type: str = "billing.execution.created"
) -> OutboundEvent:
    return OutboundEvent(
        outbox_id=next(_ids),
        tenant_id=TENANT,
        aggregate_id=aggregate_id or uuid4(),
        event_id=uuid4(),
        source="billing.execution",
        detail_type=detail_type,
        detail=detail,
        time=datetime(2026, 4, 1, tzinfo=UTC),
    )


def sized(total_bytes: int, aggregate_id: UUID | None = None) -> OutboundEvent:
    """An event whose entry size is exactly total_bytes."""
    base = entry_size(event(detail='{"p":""}'))
    return event(aggregate_id, detail='{"p":"' + "x" * (total_bytes - base) + '"}')


def all_chunks(pending: list[OutboundEvent]) -> list[list[OutboundEvent]]:
    chunks = []
    while pending:
        chunk, pending = next_chunk(pending)
        chunks.append(chunk)
    return chunks


def test_entry_size_counts_utf8_bytes_and_fourteen_for_time() -> None:
    e = event(detail='{"name":"é"}', detail_type="t")
    assert entry_size(e) == 14 + len("billing.execution") + 1 + len('{"name":"é"}'.encode())
    assert entry_size(e) == 14 + 17 + 1 + 13


def test_next_chunk_with_25_distinct_executions_makes_calls_of_10_10_5_in_order() -> None:
    events = [event() for _ in range(25)]

    chunks = all_chunks(events)

    assert [len(c) for c in chunks] == [10, 10, 5]
    assert [e for c in chunks for e in c] == events


def test_next_chunk_with_100_kb_entries_puts_two_per_call() -> None:
    events = [sized(100 * 1024) for _ in range(5)]

    chunks = all_chunks(events)

    assert [len(c) for c in chunks] == [2, 2, 1]
    assert all(sum(entry_size(e) for e in c) <= MAX_CALL_BYTES for c in chunks)


def test_next_chunk_with_entries_summing_to_exactly_the_limit_keeps_them_together() -> None:
    events = [sized(MAX_CALL_BYTES // 2), sized(MAX_CALL_BYTES // 2)]

    chunk, rest = next_chunk(events)

    assert chunk == events
    assert rest == []


def test_next_chunk_with_a_too_big_entry_fills_the_call_with_smaller_later_ones() -> None:
    big_a, big_b, small = sized(200 * 1024), sized(100 * 1024), sized(1024)

    chunk, rest = next_chunk([big_a, big_b, small])

    assert chunk == [big_a, small]
    assert rest == [big_b]


def test_next_chunk_with_several_events_of_one_execution_sends_one_per_call_in_order() -> None:
    x = uuid4()
    x1, other, x2, x3 = event(x), event(), event(x), event(x)

    chunks = all_chunks([x1, other, x2, x3])

    assert chunks == [[x1, other], [x2], [x3]]


def test_next_chunk_when_an_execution_event_does_not_fit_holds_back_its_later_events() -> None:
    x = uuid4()
    filler = sized(200 * 1024)
    x_big = sized(100 * 1024, x)
    x_small = sized(1024, x)

    chunk, rest = next_chunk([filler, x_big, x_small])

    # x_small would fit, but sending it before x_big would reorder execution x.
    assert chunk == [filler]
    assert rest == [x_big, x_small]


def test_next_chunk_with_more_than_ten_executions_never_exceeds_ten_entries() -> None:
    events = [event() for _ in range(MAX_ENTRIES_PER_CALL + 1)]

    chunk, rest = next_chunk(events)

    assert len(chunk) == MAX_ENTRIES_PER_CALL
    assert rest == events[MAX_ENTRIES_PER_CALL:]


def test_next_chunk_with_an_oversized_first_entry_raises() -> None:
    oversized = sized(MAX_CALL_BYTES + 1)
    assert too_large(oversized)
    assert not too_large(sized(MAX_CALL_BYTES))

    with pytest.raises(ValueError, match=str(oversized.outbox_id)):
        next_chunk([oversized])


def test_next_chunk_of_nothing_returns_nothing() -> None:
    assert next_chunk([]) == ([], [])


def all_waves(pending: list[OutboundEvent], max_calls: int) -> list[list[list[OutboundEvent]]]:
    waves = []
    while pending:
        wave, pending = next_wave(pending, max_calls)
        waves.append(wave)
    return waves


def test_next_wave_of_distinct_executions_is_next_chunks_calls_side_by_side() -> None:
    events = [event() for _ in range(45)]

    waves = all_waves(events, 4)

    assert [[len(call) for call in wave] for wave in waves] == [[10, 10, 10, 10], [5]]
    assert [e for wave in waves for call in wave for e in call] == events


def test_next_wave_never_puts_two_events_of_one_execution_in_one_wave_and_keeps_their_order() -> None:
    x, y = uuid4(), uuid4()
    x1, y1, x2, other, x3, y2 = event(x), event(y), event(x), event(), event(x), event(y)
    crowd = [event() for _ in range(9)]

    waves = all_waves([x1, *crowd, y1, x2, other, x3, y2], 3)

    # x2 and y2 would fit in the wave's second call: they wait for the answers to x1 and y1.
    assert waves == [[[x1, *crowd], [y1, other]], [[x2, y2]], [[x3]]]
    for wave in waves:
        keys = [e.ordering_key for call in wave for e in call]
        assert len(keys) == len(set(keys))


def test_next_wave_sends_what_one_call_had_no_room_for_in_the_next_call() -> None:
    big_a, big_b, small = sized(200 * 1024), sized(100 * 1024), sized(1024)

    wave, rest = next_wave([big_a, big_b, small], 2)

    assert wave == [[big_a, small], [big_b]]
    assert rest == []


def test_next_wave_of_one_call_is_next_chunk() -> None:
    x = uuid4()
    events = [event(x), event(), event(x), *(event() for _ in range(12))]

    wave, rest = next_wave(events, 1)

    assert [wave[0], rest] == list(next_chunk(events))


def test_next_wave_with_no_call_allowed_raises() -> None:
    with pytest.raises(ValueError, match="at least one call"):
        next_wave([event()], 0)


def test_retried_last_moves_executions_that_failed_before_behind_the_others_whole_and_in_order() -> None:
    x, y = uuid4(), uuid4()
    x1, y1, fresh, x2, y2 = event(x), event(y), event(), event(x), event(y)

    ordered = retried_last([x2, fresh, y2, x1, y1], failed_before={x1.outbox_id: 3})

    assert ordered == [y1, fresh, y2, x1, x2]
    assert all_chunks(ordered) == [[y1, fresh, x1], [y2, x2]]


def test_retried_last_looks_only_at_each_executions_oldest_event() -> None:
    x = uuid4()
    x1, x2, other = event(x), event(x), event()

    # x1 never failed: x is not a retried execution, whatever its later rows say.
    assert retried_last([x1, x2, other], failed_before={x2.outbox_id: 1}) == [x1, x2, other]


def test_retried_last_of_events_that_never_failed_is_outbox_id_order() -> None:
    events = [event() for _ in range(5)]

    assert retried_last(list(reversed(events)), failed_before={}) == events
