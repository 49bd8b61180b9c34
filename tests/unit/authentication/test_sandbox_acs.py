"""The sandbox ACS end to end: AReq -> ARes -> classification for every test card, the challenge session through to
the RReq, what the requestor's challenge indicator changes (nothing), and what never shows in a repr."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from billing.authentication.classification import Classified, classify
from billing.authentication.liability import EciClass, LiabilityShift
from billing.authentication.messages import ARes, CRes, RReq, parse_message
from billing.authentication.protocol import MessageType
from billing.authentication.sandbox_acs import (
    CHALLENGE_CODE,
    SANDBOX_CARDS,
    ChallengeCancel,
    ChallengeProgress,
    ChallengeRequired,
    ChallengeSession,
    ChallengeStatus,
    ChallengeStep,
    Frictionless,
    NotEnrolled,
    SandboxAcs,
    TransStatusReason,
    build_cres,
    build_rreq,
)
from billing.authentication.sandbox_server import ChallengeIndicator, build_areq
from billing.authentication.states import AuthenticationState, TransStatus
from billing.authentication.wire import WireMessage
from billing.domain.errors import EmvMessageInvalid
from billing.domain.money import Money
from billing.instruments.brands import CardBrand
from billing.instruments.cards import parse_card_number

CHALLENGE_CARD = "4000002760003184"
FRICTIONLESS_CARD = "4000000000003220"
ATTEMPTED_CARD = "4000000000003063"
REJECTED_CARD = "4000008400001629"
UNAVAILABLE_CARD = "4000000000003055"
MASTERCARD_CARD = "5200828282828210"
UNENROLLED_CARD = "4242424242424242"

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACS_URL = "https://sandbox.example.com/3ds/challenge/"
NOTIFICATION_URL = "https://merchant.example.com/3ds/done"
SERVER_TRANS_ID = "0f6b2c1e-8d3a-4c5b-9e7f-1a2b3c4d5e6f"
DS_TRANS_ID = "00000000-0000-0000-0000-000000000001"
ACS_TRANS_ID = "00000000-0000-0000-0000-000000000002"
# The injected random source: 20 known bytes, so the authentication value is known and can be looked for.
RANDOM = bytes(range(101, 121))
AUTHENTICATION_VALUE = base64.b64encode(RANDOM).decode("ascii")
WRONG_CODE = "654321"
A = AuthenticationState


class FakeClock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def _counting_ids() -> Callable[[], UUID]:
    numbers = itertools.count(1)
    return lambda: UUID(int=next(numbers))


def _acs(clock: FakeClock | None = None, random: bytes = RANDOM) -> SandboxAcs:
    return SandboxAcs(
        acs_url=ACS_URL, clock=clock or FakeClock(), new_id=_counting_ids(), random_bytes=lambda n: random[:n]
    )


def _areq(pan: str, indicator: ChallengeIndicator = ChallengeIndicator.NO_PREFERENCE) -> WireMessage:
    return build_areq(
        parse_card_number(pan),
        exp_month=12,
        exp_year=2030,
        amount=Money(1250, "EUR"),
        merchant_name="Sandbox Shop",
        notification_url=NOTIFICATION_URL,
        now=NOW,
        challenge_indicator=indicator,
        new_id=lambda: UUID(SERVER_TRANS_ID),
    )


def _parsed_ares(message: WireMessage) -> ARes:
    parsed = parse_message(message.to_json())
    assert isinstance(parsed, ARes)
    return parsed


def _parsed_rreq(session: ChallengeSession) -> RReq:
    parsed = parse_message(build_rreq(session).to_json())
    assert isinstance(parsed, RReq)
    return parsed


def _challenge(acs: SandboxAcs) -> ChallengeSession:
    answer = acs.authenticate(_areq(CHALLENGE_CARD))
    assert isinstance(answer, ChallengeRequired)
    return answer.session


def _submit(acs: SandboxAcs, session: ChallengeSession, *codes: str) -> ChallengeStep:
    step = ChallengeStep(session, ChallengeProgress.WAITING)
    for code in codes:
        step = acs.submit_code(step.session, code)
    return step


def _creq(acs_trans_id: str = ACS_TRANS_ID) -> WireMessage:
    return WireMessage(
        {
            "messageType": "CReq",
            "messageVersion": "2.2.0",
            "threeDSServerTransID": SERVER_TRANS_ID,
            "acsTransID": acs_trans_id,
            "challengeWindowSize": "05",
        }
    )


# --- Frictionless cards: AReq -> ARes -> classification ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("pan", "brand", "expected"),
    [
        (
            FRICTIONLESS_CARD,
            CardBrand.VISA,
            Classified(
                message_type=MessageType.ARES,
                trans_status=TransStatus.AUTHENTICATED,
                trans_status_reason=None,
                state=A.SUCCEEDED,
                eci="05",
                liability=LiabilityShift(shifted=True, eci_class=EciClass.FULLY_AUTHENTICATED),
                challenge_follows=False,
                decoupled=False,
                has_authentication_value=True,
            ),
        ),
        (
            ATTEMPTED_CARD,
            CardBrand.VISA,
            Classified(
                message_type=MessageType.ARES,
                trans_status=TransStatus.ATTEMPTED,
                trans_status_reason=None,
                state=A.SUCCEEDED,
                eci="06",
                liability=LiabilityShift(shifted=True, eci_class=EciClass.ATTEMPTED),
                challenge_follows=False,
                decoupled=False,
                has_authentication_value=True,
            ),
        ),
        (
            REJECTED_CARD,
            CardBrand.VISA,
            Classified(
                message_type=MessageType.ARES,
                trans_status=TransStatus.REJECTED,
                trans_status_reason="11",
                state=A.REJECTED,
                eci="07",
                liability=LiabilityShift(shifted=False, eci_class=EciClass.NOT_AUTHENTICATED),
                challenge_follows=False,
                decoupled=False,
                has_authentication_value=False,
            ),
        ),
        (
            UNAVAILABLE_CARD,
            CardBrand.VISA,
            Classified(
                message_type=MessageType.ARES,
                trans_status=TransStatus.NOT_PERFORMED,
                trans_status_reason="22",
                state=A.UNAVAILABLE,
                eci="07",
                liability=LiabilityShift(shifted=False, eci_class=EciClass.NOT_AUTHENTICATED),
                challenge_follows=False,
                decoupled=False,
                has_authentication_value=False,
            ),
        ),
        (
            MASTERCARD_CARD,
            CardBrand.MASTERCARD,
            Classified(
                message_type=MessageType.ARES,
                trans_status=TransStatus.AUTHENTICATED,
                trans_status_reason=None,
                state=A.SUCCEEDED,
                eci="02",
                liability=LiabilityShift(shifted=True, eci_class=EciClass.FULLY_AUTHENTICATED),
                challenge_follows=False,
                decoupled=False,
                has_authentication_value=True,
            ),
        ),
    ],
)
def test_a_frictionless_card_answers_its_fixed_outcome_end_to_end(
    pan: str, brand: CardBrand, expected: Classified
) -> None:
    answer = _acs().authenticate(_areq(pan))

    assert isinstance(answer, Frictionless)
    assert classify(_parsed_ares(answer.ares), brand=brand) == expected


def test_a_frictionless_ares_answers_the_areq_with_the_injected_ids_and_cryptogram() -> None:
    answer = _acs().authenticate(_areq(FRICTIONLESS_CARD))

    assert isinstance(answer, Frictionless)
    ares = _parsed_ares(answer.ares)
    assert (ares.three_ds_server_trans_id, ares.ds_trans_id, ares.acs_trans_id) == (
        SERVER_TRANS_ID,
        DS_TRANS_ID,
        ACS_TRANS_ID,
    )
    assert ares.authentication_value == AUTHENTICATION_VALUE
    assert len(AUTHENTICATION_VALUE) == 28
    assert ares.acs_url is None


def test_the_mastercard_card_reads_as_no_shift_under_visa_ecis() -> None:
    # Mastercard's 02 is Visa's nothing: the ECI only means something under the card's own brand.
    answer = _acs().authenticate(_areq(MASTERCARD_CARD))

    assert isinstance(answer, Frictionless)
    assert not classify(_parsed_ares(answer.ares), brand=CardBrand.VISA).liability_shifted


def test_every_listed_card_is_enrolled_and_the_mastercard_one_is_mastercard() -> None:
    for pan in SANDBOX_CARDS:
        assert not isinstance(_acs().authenticate(_areq(pan)), NotEnrolled)
    assert parse_card_number(MASTERCARD_CARD).brand is CardBrand.MASTERCARD


# --- Not enrolled -----------------------------------------------------------------------------------------------------


def test_an_unlisted_card_is_not_enrolled_and_gets_no_ares() -> None:
    def no_id() -> UUID:
        raise AssertionError("a card no ACS knows gets no dsTransID or acsTransID")

    def no_random(size: int) -> bytes:
        raise AssertionError("a card no ACS knows gets no authentication value")

    acs = SandboxAcs(acs_url=ACS_URL, clock=FakeClock(), new_id=no_id, random_bytes=no_random)

    answer = acs.authenticate(_areq(UNENROLLED_CARD))

    assert answer == NotEnrolled(three_ds_server_trans_id=SERVER_TRANS_ID, account_last4="4242")
    assert UNENROLLED_CARD not in repr(answer)


# --- The challenge card -----------------------------------------------------------------------------------------------


def test_the_challenge_card_asks_for_a_challenge_at_the_acs_url_of_its_transaction() -> None:
    answer = _acs().authenticate(_areq(CHALLENGE_CARD))

    assert isinstance(answer, ChallengeRequired)
    ares = _parsed_ares(answer.ares)
    assert ares.trans_status is TransStatus.CHALLENGE_REQUIRED
    assert ares.acs_challenge_mandated is True
    assert ares.acs_url == f"https://sandbox.example.com/3ds/challenge/{ACS_TRANS_ID}"
    assert not ares.has_authentication_value
    classified = classify(ares, brand=CardBrand.VISA)
    assert classified.state is A.CHALLENGE_REQUIRED
    assert classified.liability is None


def test_a_challenge_session_starts_open_with_three_attempts_and_ten_minutes() -> None:
    session = _challenge(_acs())

    assert (session.acs_trans_id, session.ds_trans_id, session.three_ds_server_trans_id) == (
        ACS_TRANS_ID,
        DS_TRANS_ID,
        SERVER_TRANS_ID,
    )
    assert session.status is ChallengeStatus.OPEN
    assert session.attempts_left == 3
    assert session.created_at == NOW
    assert session.expires_at == NOW + timedelta(minutes=10)
    assert session.notification_url == NOTIFICATION_URL
    assert session.brand is CardBrand.VISA
    assert session.expected_code == CHALLENGE_CODE == "123456"


def test_the_right_code_ends_the_challenge_authenticated_with_liability_shifted() -> None:
    acs = _acs()

    step = acs.submit_code(_challenge(acs), "123456")

    assert step.progress is ChallengeProgress.ENDED
    assert step.session.status is ChallengeStatus.AUTHENTICATED
    rreq = _parsed_rreq(step.session)
    assert (rreq.trans_status, rreq.eci, rreq.authentication_value, rreq.challenge_cancel) == (
        TransStatus.AUTHENTICATED,
        "05",
        AUTHENTICATION_VALUE,
        None,
    )
    assert (rreq.acs_trans_id, rreq.ds_trans_id, rreq.three_ds_server_trans_id) == (
        ACS_TRANS_ID,
        DS_TRANS_ID,
        SERVER_TRANS_ID,
    )
    classified = classify(rreq, brand=CardBrand.VISA)
    assert classified.state is A.SUCCEEDED
    assert classified.liability == LiabilityShift(shifted=True, eci_class=EciClass.FULLY_AUTHENTICATED)
    assert build_rreq(step.session).members["interactionCounter"] == "01"


def test_a_wrong_code_costs_an_attempt_and_the_right_one_still_passes_after_it() -> None:
    acs = _acs()
    session = _challenge(acs)

    wrong = acs.submit_code(session, WRONG_CODE)
    right = acs.submit_code(wrong.session, CHALLENGE_CODE)

    assert wrong.progress is ChallengeProgress.WRONG_CODE
    assert wrong.session.status is ChallengeStatus.OPEN
    assert wrong.session.attempts_left == 2
    assert right.session.status is ChallengeStatus.AUTHENTICATED
    assert build_rreq(right.session).members["interactionCounter"] == "02"


def test_three_wrong_codes_fail_the_challenge_as_card_authentication_failed() -> None:
    acs = _acs()
    session = _challenge(acs)

    first = acs.submit_code(session, WRONG_CODE)
    second = acs.submit_code(first.session, "000000")
    third = acs.submit_code(second.session, "12345")

    assert [first.progress, second.progress, third.progress] == [
        ChallengeProgress.WRONG_CODE,
        ChallengeProgress.WRONG_CODE,
        ChallengeProgress.ENDED,
    ]
    assert third.session.status is ChallengeStatus.FAILED
    assert third.session.attempts_left == 0
    rreq = _parsed_rreq(third.session)
    assert (rreq.trans_status, rreq.trans_status_reason, rreq.eci, rreq.challenge_cancel) == (
        TransStatus.NOT_AUTHENTICATED,
        TransStatusReason.CARD_AUTHENTICATION_FAILED,
        "07",
        None,
    )
    assert not rreq.has_authentication_value
    classified = classify(rreq, brand=CardBrand.VISA)
    assert classified.state is A.FAILED
    assert not classified.liability_shifted
    assert build_rreq(third.session).members["interactionCounter"] == "03"


def test_a_code_after_the_challenge_failed_is_refused_even_the_right_one() -> None:
    acs = _acs()
    failed = _submit(acs, _challenge(acs), WRONG_CODE, WRONG_CODE, WRONG_CODE).session

    fourth = acs.submit_code(failed, CHALLENGE_CODE)

    assert fourth.progress is ChallengeProgress.ALREADY_ENDED
    assert fourth.session == failed


def test_a_code_after_the_challenge_passed_is_refused_and_changes_nothing() -> None:
    acs = _acs()
    passed = acs.submit_code(_challenge(acs), CHALLENGE_CODE).session

    again = acs.submit_code(passed, WRONG_CODE)

    assert again.progress is ChallengeProgress.ALREADY_ENDED
    assert again.session == passed
    assert acs.cancel(passed).progress is ChallengeProgress.ALREADY_ENDED
    assert acs.expire(passed).progress is ChallengeProgress.ALREADY_ENDED


@pytest.mark.parametrize("code", ["\uff11\uff12\uff13\uff14\uff15\uff16", "123456 ", "", "1234567", "12345"])
def test_only_the_exact_code_passes(code: str) -> None:
    acs = _acs()

    step = acs.submit_code(_challenge(acs), code)

    assert step.progress is ChallengeProgress.WRONG_CODE


def test_cancel_ends_the_challenge_not_authenticated_with_cardholder_cancel() -> None:
    acs = _acs()
    session = acs.submit_code(_challenge(acs), WRONG_CODE).session

    step = acs.cancel(session)

    assert step.progress is ChallengeProgress.ENDED
    assert step.session.status is ChallengeStatus.CANCELED
    rreq = _parsed_rreq(step.session)
    assert (rreq.trans_status, rreq.challenge_cancel, rreq.trans_status_reason) == (
        TransStatus.NOT_AUTHENTICATED,
        ChallengeCancel.CARDHOLDER_SELECTED_CANCEL,
        TransStatusReason.NOT_PERFORMED_BY_CARDHOLDER,
    )
    assert rreq.challenge_cancel == "01"
    assert classify(rreq, brand=CardBrand.VISA).state is A.FAILED
    assert acs.submit_code(step.session, CHALLENGE_CODE).progress is ChallengeProgress.ALREADY_ENDED


def test_expire_before_the_deadline_changes_nothing() -> None:
    clock = FakeClock()
    acs = _acs(clock)
    session = _challenge(acs)
    clock.advance(timedelta(minutes=10) - timedelta(microseconds=1))

    step = acs.expire(session)

    assert step.progress is ChallengeProgress.WAITING
    assert step.session == session


def test_a_challenge_never_opened_times_out_as_first_creq_not_received() -> None:
    clock = FakeClock()
    acs = _acs(clock)
    session = _challenge(acs)
    clock.advance(timedelta(minutes=10))

    step = acs.expire(session)

    assert step.progress is ChallengeProgress.ENDED
    assert step.session.status is ChallengeStatus.TIMED_OUT
    assert step.session.ended_at == NOW + timedelta(minutes=10)
    rreq = _parsed_rreq(step.session)
    assert (rreq.trans_status, rreq.trans_status_reason, rreq.challenge_cancel) == (
        TransStatus.NOT_AUTHENTICATED,
        "14",
        "05",
    )
    assert classify(rreq, brand=CardBrand.VISA).state is A.FAILED
    assert build_rreq(step.session).members["interactionCounter"] == "00"


def test_a_challenge_left_open_on_screen_times_out_as_other_timeout() -> None:
    clock = FakeClock()
    acs = _acs(clock)
    opened = acs.receive_creq(_challenge(acs), _creq())
    clock.advance(timedelta(minutes=11))

    step = acs.expire(opened.session)

    assert opened.progress is ChallengeProgress.WAITING
    assert opened.session.creq_received_at == NOW
    assert _parsed_rreq(step.session).challenge_cancel == "04"


def test_a_wrong_code_before_the_timeout_also_counts_as_having_reached_the_challenge() -> None:
    clock = FakeClock()
    acs = _acs(clock)
    session = acs.submit_code(_challenge(acs), WRONG_CODE).session
    clock.advance(timedelta(hours=1))

    assert acs.expire(session).session.challenge_cancel is ChallengeCancel.TIMED_OUT_AT_ACS


def test_the_right_code_after_the_deadline_times_out_instead_of_authenticating() -> None:
    clock = FakeClock()
    acs = _acs(clock)
    session = acs.receive_creq(_challenge(acs), _creq()).session
    clock.advance(timedelta(minutes=10, seconds=1))

    step = acs.submit_code(session, CHALLENGE_CODE)

    assert step.progress is ChallengeProgress.ENDED
    assert step.session.status is ChallengeStatus.TIMED_OUT
    assert step.session.authentication_value is None
    assert step.session.interactions == 0
    assert acs.submit_code(step.session, CHALLENGE_CODE).progress is ChallengeProgress.ALREADY_ENDED


def test_a_cancel_after_the_deadline_is_a_timeout() -> None:
    clock = FakeClock()
    acs = _acs(clock)
    session = _challenge(acs)
    clock.advance(timedelta(minutes=30))

    assert acs.cancel(session).session.status is ChallengeStatus.TIMED_OUT


def test_a_creq_for_another_challenge_is_refused() -> None:
    acs = _acs()

    with pytest.raises(EmvMessageInvalid) as refused:
        acs.receive_creq(_challenge(acs), _creq(acs_trans_id="00000000-0000-0000-0000-0000000000ff"))

    assert refused.value.reason == "invalid_field:acsTransID"


def test_the_final_cres_says_y_or_n_and_parses() -> None:
    acs = _acs()
    passed = acs.submit_code(_challenge(acs), CHALLENGE_CODE).session
    canceled = acs.cancel(_challenge(_acs())).session

    for session, status in ((passed, TransStatus.AUTHENTICATED), (canceled, TransStatus.NOT_AUTHENTICATED)):
        cres = parse_message(build_cres(session).to_json())
        assert isinstance(cres, CRes)
        assert (cres.trans_status, cres.acs_trans_id) == (status, ACS_TRANS_ID)
        assert build_cres(session).members["challengeCompletionInd"] == "Y"


def test_an_open_challenge_has_no_rreq_or_final_cres() -> None:
    session = _challenge(_acs())

    with pytest.raises(ValueError, match="open challenge"):
        build_rreq(session)
    with pytest.raises(ValueError, match="open challenge"):
        build_cres(session)


# --- The requestor's challenge indicator ------------------------------------------------------------------------------


@pytest.mark.parametrize("indicator", list(ChallengeIndicator))
def test_the_challenge_card_is_challenged_whatever_the_requestor_asked(indicator: ChallengeIndicator) -> None:
    answer = _acs().authenticate(_areq(CHALLENGE_CARD, indicator))

    assert isinstance(answer, ChallengeRequired)
    assert _parsed_ares(answer.ares).acs_challenge_mandated is True


@pytest.mark.parametrize("indicator", list(ChallengeIndicator))
@pytest.mark.parametrize("pan", [FRICTIONLESS_CARD, ATTEMPTED_CARD, REJECTED_CARD, UNAVAILABLE_CARD, MASTERCARD_CARD])
def test_a_frictionless_card_is_never_challenged_even_on_request(pan: str, indicator: ChallengeIndicator) -> None:
    assert isinstance(_acs().authenticate(_areq(pan, indicator)), Frictionless)


# --- What the sandbox refuses -----------------------------------------------------------------------------------------


def _with(areq: WireMessage, **members: str) -> WireMessage:
    return WireMessage({**areq.to_json(), **members})


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ({"messageVersion": "2.1.0"}, "unsupported_version"),
        ({"deviceChannel": "01"}, "invalid_field:deviceChannel"),
        ({"acctNumber": "40000027600031x4"}, "invalid_field:acctNumber"),
    ],
)
def test_an_areq_the_sandbox_cannot_serve_is_refused_without_quoting_the_card(
    members: dict[str, str], reason: str
) -> None:
    with pytest.raises(EmvMessageInvalid) as refused:
        _acs().authenticate(_with(_areq(CHALLENGE_CARD), **members))

    assert refused.value.reason == reason
    assert "4000002760003" not in str(refused.value)


def test_an_ares_given_as_an_areq_is_refused() -> None:
    acs = _acs()
    ares = acs.authenticate(_areq(FRICTIONLESS_CARD))
    assert isinstance(ares, Frictionless)

    with pytest.raises(EmvMessageInvalid) as refused:
        acs.authenticate(ares.ares)

    assert refused.value.reason == "unexpected_message_type"


@pytest.mark.parametrize(
    "acs_url", ["http://sandbox.example.com/3ds", "https:///3ds", "https://sandbox.example.com/3ds?x=1"]
)
def test_the_acs_needs_an_https_challenge_base(acs_url: str) -> None:
    with pytest.raises(ValueError, match="https"):
        SandboxAcs(acs_url=acs_url, clock=FakeClock())


def test_a_random_source_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="20 bytes"):
        _acs(random=b"short").authenticate(_areq(FRICTIONLESS_CARD))


# --- Secrets stay out of every repr -----------------------------------------------------------------------------------


def test_no_repr_shows_the_card_number_the_code_or_the_authentication_value() -> None:
    acs = _acs()
    areq = _areq(CHALLENGE_CARD)
    answer = acs.authenticate(areq)
    assert isinstance(answer, ChallengeRequired)
    wrong = acs.submit_code(answer.session, WRONG_CODE)
    passed = acs.submit_code(wrong.session, CHALLENGE_CODE)
    frictionless = acs.authenticate(_areq(FRICTIONLESS_CARD))
    shown_objects: list[object] = [
        areq,
        answer,
        answer.session,
        wrong,
        passed,
        passed.session,
        build_rreq(passed.session),
        build_cres(passed.session),
        _parsed_rreq(passed.session),
        frictionless,
    ]

    for shown in [text for thing in shown_objects for text in (repr(thing), str(thing))]:
        assert CHALLENGE_CARD not in shown
        assert FRICTIONLESS_CARD not in shown
        assert CHALLENGE_CODE not in shown
        assert AUTHENTICATION_VALUE not in shown
    # The values are there to be sent, just never shown.
    assert build_rreq(passed.session).members["authenticationValue"] == AUTHENTICATION_VALUE
    assert "authenticationValue=<hidden>" in repr(build_rreq(passed.session))


# --- Determinism and persistence --------------------------------------------------------------------------------------


def test_the_same_injected_clock_ids_and_randomness_give_the_same_messages() -> None:
    def run() -> tuple[dict[str, str], dict[str, str], dict[str, object]]:
        acs = _acs()
        answer = acs.authenticate(_areq(CHALLENGE_CARD))
        assert isinstance(answer, ChallengeRequired)
        ended = acs.submit_code(answer.session, CHALLENGE_CODE).session
        return answer.ares.to_json(), build_rreq(ended).to_json(), ended.to_dict()

    assert run() == run()


def test_the_default_random_source_draws_a_fresh_authentication_value_each_time() -> None:
    acs = SandboxAcs(acs_url=ACS_URL, clock=FakeClock())
    values = set()
    for _ in range(3):
        answer = acs.authenticate(_areq(FRICTIONLESS_CARD))
        assert isinstance(answer, Frictionless)
        values.add(answer.ares.members["authenticationValue"])

    assert len(values) == 3
    assert all(len(base64.b64decode(value, validate=True)) == 20 for value in values)


def test_an_rreq_rebuilt_from_a_reloaded_session_is_the_same_rreq() -> None:
    acs = _acs()
    ended = acs.submit_code(_challenge(acs), CHALLENGE_CODE).session

    reloaded = ChallengeSession.from_dict(json.loads(json.dumps(ended.to_dict())))

    assert build_rreq(reloaded) == build_rreq(ended)


def test_a_session_round_trips_through_json_at_every_stage() -> None:
    clock = FakeClock()
    acs = _acs(clock)
    opened = _challenge(acs)
    on_screen = acs.receive_creq(opened, _creq()).session
    one_wrong = acs.submit_code(on_screen, WRONG_CODE).session
    clock.advance(timedelta(minutes=11))
    timed_out = acs.expire(one_wrong).session

    for session in (opened, on_screen, one_wrong, timed_out):
        assert ChallengeSession.from_dict(json.loads(json.dumps(session.to_dict()))) == session


def test_a_reloaded_session_goes_on_where_it_stopped() -> None:
    acs = _acs()
    two_wrong = _submit(acs, _challenge(acs), WRONG_CODE, WRONG_CODE).session

    third = acs.submit_code(ChallengeSession.from_dict(two_wrong.to_dict()), WRONG_CODE)

    assert third.session.status is ChallengeStatus.FAILED


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"attempts_left": True}, "attempts_left"),
        ({"attempts_left": 4}, "attempt counts"),
        ({"status": "won"}, "status"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"created_at": "2026-03-01T12:00:00"}, "timezone-aware"),
        ({"expected_code": 123456}, "expected_code"),
        ({"status": "authenticated", "ended_at": NOW.isoformat()}, "authentication value"),
        ({"ended_at": NOW.isoformat()}, "end time"),
    ],
)
def test_from_dict_refuses_a_corrupted_session_without_quoting_its_secrets(
    change: dict[str, object], names: str
) -> None:
    data = {**_challenge(_acs()).to_dict(), **change}

    with pytest.raises(ValueError, match=names) as refused:
        ChallengeSession.from_dict(data)

    assert CHALLENGE_CODE not in str(refused.value)


def test_from_dict_refuses_a_missing_or_extra_key() -> None:
    data = _challenge(_acs()).to_dict()

    with pytest.raises(ValueError, match="exactly the keys"):
        ChallengeSession.from_dict({key: value for key, value in data.items() if key != "attempts_left"})
    with pytest.raises(ValueError, match="exactly the keys"):
        ChallengeSession.from_dict({**data, "pan": CHALLENGE_CARD})
