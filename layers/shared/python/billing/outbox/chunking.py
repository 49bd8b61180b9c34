"""Splitting events into PutEvents calls: at most 10 entries and 256 KB each, one entry per execution (pure).

One entry per execution per call is what keeps per-execution order: PutEvents accepts or refuses each entry on
its own, so if an execution's first and second events shared a call, the second could be accepted while the
first was refused, and be published before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

from billing.outbox.events import OutboundEvent

# PutEvents limits: entries per call, and total entry size per call (as EventBridge counts it, see entry_size).
MAX_ENTRIES_PER_CALL = 10
MAX_CALL_BYTES = 256 * 1024
# EventBridge counts a Time parameter as 14 bytes, whatever its value.
_TIME_BYTES = 14


def entry_size(event: OutboundEvent) -> int:
    """The entry's size as EventBridge counts it: Time + UTF-8 bytes of Source, DetailType and Detail.

    Resources would count too; the relay sends none.
    """
    return _TIME_BYTES + len(event.source.encode()) + len(event.detail_type.encode()) + len(event.detail.encode())


def too_large(event: OutboundEvent) -> bool:
    """An entry EventBridge refuses even alone: it can never be published as it is."""
    return entry_size(event) > MAX_CALL_BYTES


def next_chunk(pending: Sequence[OutboundEvent]) -> tuple[list[OutboundEvent], list[OutboundEvent]]:
    """Split off the next PutEvents call from events in outbox id order; the rest keeps its order.

    Greedy: walks the events in order and takes each one that fits, unless an event of the same execution was
    already taken or passed over in this walk, in which case that execution's later events wait for a later call.
    The first event always fits, so every call makes progress.
    """
    chunk: list[OutboundEvent] = []
    rest: list[OutboundEvent] = []
    size = 0
    seen: set[tuple[UUID, UUID]] = set()
    for index, event in enumerate(pending):
        if len(chunk) == MAX_ENTRIES_PER_CALL:
            rest.extend(pending[index:])
            break
        event_size = entry_size(event)
        if event.ordering_key not in seen and size + event_size <= MAX_CALL_BYTES:
            chunk.append(event)
            size += event_size
        else:
            rest.append(event)
        seen.add(event.ordering_key)
    if pending and not chunk:
        raise ValueError(f"outbox row {pending[0].outbox_id} is larger than one PutEvents call allows")
    return chunk, rest


def next_wave(
    pending: Sequence[OutboundEvent], max_calls: int
) -> tuple[list[list[OutboundEvent]], list[OutboundEvent]]:
    """Split off up to `max_calls` PutEvents calls to make at once, and the rest (in its order).

    No execution has an event in two calls of a wave, so every call of it may be sent concurrently. One walk in
    order: each execution's first event goes in the first call with room for it (a new call if none has and the
    wave may have one more), so the calls fill as next_chunk's would one after the other, and what one call has no
    room for may still go in the next. An execution's later events wait for a later wave, once this one's answers
    are known. The walk stops once every call is full: a wave costs its calls, not the backlog behind them.
    """
    if max_calls < 1:
        raise ValueError("a wave has at least one call")
    calls: list[list[OutboundEvent]] = []
    sizes: list[int] = []
    rest: list[OutboundEvent] = []
    seen: set[tuple[UUID, UUID]] = set()
    full = 0
    for index, event in enumerate(pending):
        if full == max_calls:
            rest.extend(pending[index:])
            break
        key = event.ordering_key
        if key in seen:
            rest.append(event)
            continue
        seen.add(key)
        event_size = entry_size(event)
        for n, call in enumerate(calls):
            if len(call) < MAX_ENTRIES_PER_CALL and sizes[n] + event_size <= MAX_CALL_BYTES:
                call.append(event)
                sizes[n] += event_size
                if len(call) == MAX_ENTRIES_PER_CALL:
                    full += 1
                break
        else:
            if len(calls) < max_calls and event_size <= MAX_CALL_BYTES:
                calls.append([event])
                sizes.append(event_size)
            else:
                rest.append(event)
    if pending and not calls:
        raise ValueError(f"outbox row {pending[0].outbox_id} is larger than one PutEvents call allows")
    return calls, rest


def retried_last(events: Sequence[OutboundEvent], failed_before: Mapping[int, int]) -> list[OutboundEvent]:
    """Events in the order to send them: executions whose oldest event here failed before go after the others.

    `failed_before` maps an outbox id to its earlier failed attempts. Each execution's events stay together in
    outbox id order, so what next_chunk builds from the result still keeps per-execution order; only whole
    executions move, and an execution that keeps failing can no longer head every call.
    """
    ordered = sorted(events, key=lambda event: event.outbox_id)
    retried: set[tuple[UUID, UUID]] = set()
    seen: set[tuple[UUID, UUID]] = set()
    for event in ordered:
        if event.ordering_key not in seen and failed_before.get(event.outbox_id, 0) > 0:
            retried.add(event.ordering_key)
        seen.add(event.ordering_key)
    return sorted(ordered, key=lambda event: (event.ordering_key in retried, event.outbox_id))
