"""The authentication state machine and what each EMV transStatus means in an ARes and an RReq."""

from __future__ import annotations

import itertools

import pytest

from billing.authentication.protocol import MessageType, MessageVersion
from billing.authentication.states import (
    ALLOWED_TRANSITIONS,
    AuthenticationState,
    TransStatus,
    can_move,
    is_final,
    state_for,
    trans_statuses_allowed,
)
from billing.domain.errors import EmvMessageInvalid

A = AuthenticationState
T = TransStatus
FINAL = {A.SUCCEEDED, A.FAILED, A.REJECTED, A.UNAVAILABLE, A.EXPIRED}


def test_the_allowed_transitions_are_exactly_these() -> None:
    allowed = {(old, new) for old, news in ALLOWED_TRANSITIONS.items() for new in news}

    assert allowed == {(A.STARTED, A.CHALLENGE_REQUIRED)} | {(A.STARTED, s) for s in FINAL} | {
        (A.CHALLENGE_REQUIRED, s) for s in FINAL
    }


def test_every_state_has_an_entry_in_the_table() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(AuthenticationState)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(A, A)))
def test_can_move_agrees_with_the_table_and_never_leaves_a_final_state(
    old: AuthenticationState, new: AuthenticationState
) -> None:
    assert can_move(old, new) == (new in ALLOWED_TRANSITIONS[old])
    if is_final(old):
        assert not can_move(old, new)


def test_a_challenge_cannot_be_asked_for_twice_nor_an_authentication_restarted() -> None:
    assert not can_move(A.CHALLENGE_REQUIRED, A.CHALLENGE_REQUIRED)
    assert not can_move(A.CHALLENGE_REQUIRED, A.STARTED)
    assert not can_move(A.STARTED, A.STARTED)


def test_final_states_are_exactly_those_without_a_way_out() -> None:
    assert {s for s in A if is_final(s)} == FINAL == {s for s in A if not ALLOWED_TRANSITIONS[s]}


def test_trans_status_values_are_the_emv_letters() -> None:
    assert {s.value for s in TransStatus} == set("YNUACDRI")


def test_every_trans_status_has_a_meaning() -> None:
    assert T("Y").meaning.startswith("authentication verification successful")
    assert "decoupled" in T("D").meaning
    assert "informational only" in T("I").meaning
    assert len({s.meaning for s in TransStatus}) == len(TransStatus)


ARES_STATES = {
    T.AUTHENTICATED: A.SUCCEEDED,
    T.ATTEMPTED: A.SUCCEEDED,
    T.INFORMATIONAL: A.SUCCEEDED,
    T.NOT_AUTHENTICATED: A.FAILED,
    T.REJECTED: A.REJECTED,
    T.NOT_PERFORMED: A.UNAVAILABLE,
    T.CHALLENGE_REQUIRED: A.CHALLENGE_REQUIRED,
    T.DECOUPLED_CHALLENGE: A.CHALLENGE_REQUIRED,
}


@pytest.mark.parametrize(("status", "state"), ARES_STATES.items())
def test_an_ares_moves_a_started_authentication_to_its_state(status: TransStatus, state: AuthenticationState) -> None:
    assert state_for(status, message_type=MessageType.ARES) is state
    assert can_move(A.STARTED, state)


@pytest.mark.parametrize("status", [T.AUTHENTICATED, T.ATTEMPTED, T.NOT_AUTHENTICATED, T.REJECTED, T.NOT_PERFORMED])
def test_an_rreq_ends_a_challenge_in_a_final_state(status: TransStatus) -> None:
    state = state_for(status, message_type=MessageType.RREQ)

    assert state is ARES_STATES[status]
    assert is_final(state)
    assert can_move(A.CHALLENGE_REQUIRED, state)


@pytest.mark.parametrize("status", [T.CHALLENGE_REQUIRED, T.DECOUPLED_CHALLENGE, T.INFORMATIONAL])
def test_an_rreq_cannot_ask_for_a_challenge_or_be_informational(status: TransStatus) -> None:
    with pytest.raises(EmvMessageInvalid) as refused:
        state_for(status, message_type=MessageType.RREQ)

    assert refused.value.reason == "invalid_field:transStatus"


@pytest.mark.parametrize("message_type", [MessageType.AREQ, MessageType.CRES, MessageType.RRES, MessageType.ERRO])
def test_only_an_ares_or_rreq_moves_an_authentication(message_type: MessageType) -> None:
    with pytest.raises(ValueError, match="only an ARes or an RReq"):
        state_for(T.AUTHENTICATED, message_type=message_type)


def test_decoupled_and_informational_only_exist_from_2_2_0() -> None:
    assert trans_statuses_allowed(MessageType.ARES, MessageVersion.V2_1_0) == frozenset("YNUACR")
    assert trans_statuses_allowed(MessageType.ARES, MessageVersion.V2_2_0) == frozenset(TransStatus)
    assert trans_statuses_allowed(MessageType.ARES, MessageVersion.V2_3_1) == frozenset(TransStatus)


@pytest.mark.parametrize("version", list(MessageVersion))
def test_which_messages_carry_which_trans_status(version: MessageVersion) -> None:
    assert trans_statuses_allowed(MessageType.RREQ, version) == frozenset("YNUAR")
    assert trans_statuses_allowed(MessageType.CRES, version) == frozenset("YN")
    for message_type in (MessageType.AREQ, MessageType.CREQ, MessageType.RRES, MessageType.ERRO):
        assert trans_statuses_allowed(message_type, version) == frozenset()
