"""3-D Secure between the risk decision and the submission: exemptions, the engine's own EMV flow for the sandbox,
and the record of what Stripe and Adyen ran themselves.

For each card charge the decision arrives here as allow or require_3ds (block and review are settled before):

- allow: a merchant-initiated charge is out of SCA's scope (exemption merchant_initiated); a customer-initiated one
  below the PSD2 low-value line is exempted while the instrument's counter since its last authentication allows
  (fewer than 5 such charges and EUR 100 in all, RTS art. 16), and authenticated when it no longer does.
- require_3ds: the transaction-risk-analysis exemption when the tenant enabled it and the score and amount allow
  (art. 18); else the provider's 3DS Server (Stripe, Adyen: REQUEST), or, for the sandbox, the engine's: an AReq to
  the sandbox ACS, frictionless or a challenge the customer completes on the ACS's page.

Every outcome is one billing.authentications row per execution, and each change of it is written in one
transaction with its lifecycle event (billing.execution.authentication_required / .authenticated) and outbox row.
An exemption shifts no liability. The authentication value exists only in memory between the ARes or RReq that
carries it and the submission it goes with; the row keeps its digest and when it was used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final
from uuid import UUID, uuid4

import psycopg
from psycopg import Cursor
from psycopg.rows import DictRow

from billing.authentication.classification import classify
from billing.authentication.liability import liability_for
from billing.authentication.messages import ARes, RReq, parse_message
from billing.authentication.sandbox_acs import (
    AcsAnswer,
    ChallengeRequired,
    Frictionless,
    NotEnrolled,
    SandboxAcs,
)
from billing.authentication.sandbox_server import build_areq
from billing.authentication.states import AuthenticationState, TransStatus
from billing.authentication.store import (
    AcsChallenge,
    AcsChallengeStore,
    AuthenticationRecord,
    AuthenticationRepository,
    NewAuthentication,
    Outcome,
    low_value_usage_of,
    queue_low_value_usage,
    record_of,
    value_digest,
)
from billing.authentication.wire import WireMessage
from billing.db.attempts import annotate, queue_annotation
from billing.db.connection import Connection
from billing.db.sqlstates import translated_guard_errors
from billing.db.tenancy import commit_without_flush_wait, pipelined_tenant_transaction, tenant_transaction
from billing.domain.execution import Execution, PaymentRail
from billing.domain.money import Money
from billing.domain.transitions import EVENT_PREFIX
from billing.domain.workflow import WorkflowWriteContext
from billing.instruments.brands import CardBrand
from billing.instruments.cards import parse_card_number
from billing.instruments.model import is_instrument_id
from billing.rails.ports import ChargeInitiator
from billing.rails.results import NextAction, NextActionType
from billing.rails.three_ds import (
    NO_THREE_DS,
    AuthenticationData,
    Exemption,
    ProviderAuthentication,
    ThreeDSecureInstruction,
    ThreeDSecureMode,
)
from billing.resource_names import API_BASE_PATH
from billing.risk.defaults import SCA_AMOUNT
from billing.risk.gate import Verdict, initiator_of
from billing.risk.rules import Action, UnavailableAuthentication
from billing.risk.velocity import lock_instrument

AUTHENTICATION_REQUIRED_EVENT_TYPE: Final = EVENT_PREFIX + "authentication_required"
AUTHENTICATED_EVENT_TYPE: Final = EVENT_PREFIX + "authenticated"
SANDBOX_PROVIDER: Final = "sandbox"
LOW_VALUE_MAX_CHARGES: Final = 5
NOT_ENROLLED_REASON: Final = "not_enrolled"
# A sandbox card tokenized without an expiry (a raw test token) is authenticated with this one.
_TEST_EXPIRY: Final = (12, 2034)

# The sandbox's 3-D Secure test cards by the sandbox token the vault provisions for them (public test numbers,
# never a customer's card): the engine's 3DS Server reads the card from the token, as a PSP's reads its own vault.
SANDBOX_3DS_CARDS: Final = {
    "tok_3ds": "4000000000003220",
    "tok_3ds_challenge": "4000002760003184",
    "tok_3ds_attempted": "4000000000003063",
    "tok_3ds_rejected": "4000008400001629",
    "tok_3ds_unavailable": "4000000000003055",
    "tok_3ds_mastercard": "5200828282828210",
}

# The error code an execution fails with, by how its authentication ended.
REFUSAL_CODES: Final = {
    AuthenticationState.FAILED: "authentication_failed",
    AuthenticationState.REJECTED: "authentication_rejected",
    AuthenticationState.UNAVAILABLE: "authentication_unavailable",
    AuthenticationState.EXPIRED: "authentication_expired",
}


def low_value_limit(currency: str) -> int | None:
    """The cumulative EUR 100 of art. 16, per currency: the same rounded equivalents as the EUR 30 line."""
    line = SCA_AMOUNT.get(currency)
    return None if line is None else line * 10 // 3


class StepKind(StrEnum):
    PROCEED = "proceed"
    WAIT = "wait"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class AuthenticationStep:
    """What the driver does next: submit (with this 3-D Secure instruction), wait for the customer, or refuse."""

    kind: StepKind
    three_ds: ThreeDSecureInstruction = NO_THREE_DS
    next_action: NextAction | None = None
    error_code: str | None = None
    record: AuthenticationRecord | None = None


@dataclass(frozen=True, slots=True)
class ThreeDSecureSettings:
    # The engine's public base URL, where the customer's browser reaches the challenge pages.
    public_url: str
    # Where the customer's browser goes when the authentication is over (PROVIDER_RETURN_URL).
    return_url: str | None = None
    merchant_name: str = "Sandbox merchant"

    @property
    def _base(self) -> str:
        return self.public_url.rstrip("/") + API_BASE_PATH

    def challenge_url(self, tenant_id: UUID, authentication_id: UUID) -> str:
        return f"{self._base}/3ds/{tenant_id}/{authentication_id}/challenge"

    def notification_url(self, tenant_id: UUID, authentication_id: UUID) -> str:
        return f"{self._base}/3ds/{tenant_id}/{authentication_id}/notify"

    def acs_url(self) -> str:
        return f"{self._base}/sandbox-acs"


# (tenant, payment instrument id) -> the sandbox's token for it (a vault instrument's provisioned token, or the
# token itself); None when the sandbox holds none.
SandboxTokens = Callable[[UUID, str | None], str | None]
Clock = Callable[[], datetime]


_SANDBOX_TOKEN = "select billing.payment_instrument_provider_token(%s, %s, %s) as token"  # noqa: S105 - a query


def sandbox_tokens(conn: Connection) -> SandboxTokens:
    """The sandbox's token for an instrument: the one the vault provisioned there, or the token the caller sent."""

    def token_for(tenant_id: UUID, instrument_id: str | None) -> str | None:
        if instrument_id is None or not is_instrument_id(instrument_id):
            return instrument_id
        row = conn.execute(_SANDBOX_TOKEN, [tenant_id, instrument_id, SANDBOX_PROVIDER]).fetchone()
        return row["token"] if row else None

    return token_for


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ThreeDSecure:
    def __init__(
        self,
        conn: Connection,
        settings: ThreeDSecureSettings,
        *,
        sandbox_tokens: SandboxTokens,
        clock: Clock = _utc_now,
        acs: SandboxAcs | None = None,
    ) -> None:
        self._conn = conn
        self._settings = settings
        self._tokens = sandbox_tokens
        self._clock = clock
        self._acs = acs or SandboxAcs(acs_url=settings.acs_url(), clock=clock)
        self._repository = AuthenticationRepository(conn)

    @property
    def repository(self) -> AuthenticationRepository:
        return self._repository

    @property
    def acs(self) -> SandboxAcs:
        return self._acs

    @property
    def settings(self) -> ThreeDSecureSettings:
        return self._settings

    # --- before submission ------------------------------------------------------------------------------------

    def decide(
        self, execution: Execution, verdict: Verdict, *, context: WorkflowWriteContext, correlation_id: str | None
    ) -> AuthenticationStep:
        """The step for an execution whose risk decision is allow or require_3ds (or an approved review)."""
        if execution.payment_rail is not PaymentRail.CARD:
            return AuthenticationStep(StepKind.PROCEED)
        # A decision made just now has no authentication yet (one is only ever started after its decision): the
        # read is for a decision asked again. The insert's key stays the guard if that ever stops being true.
        existing = None if verdict.fresh else self._repository.of_execution(execution.tenant_id, execution.id)
        if existing is not None:
            return self._resume(existing, verdict)
        planned = self._planned(execution, verdict)
        if isinstance(planned, AuthenticationStep):
            return planned
        if planned is not None:
            exempted = self._exempt(execution, verdict, planned, context, correlation_id)
            if exempted is not None:
                return exempted
            # Past the low-value counter, a small charge needs the customer to authenticate like a large one.
        if execution.payment_provider != SANDBOX_PROVIDER:
            record, _ = self._repository.start(self._new(execution, verdict, performed_by="provider"))
            return AuthenticationStep(StepKind.PROCEED, _REQUEST, record=record)
        return self._authenticate_at_sandbox(execution, verdict, context, correlation_id)

    def low_value_usage_before(self, execution: Execution, instrument_key: str) -> Cursor[DictRow] | None:
        """For RiskGate.assess `before`: the low-value counter's read, sent under the instrument's lock in the
        assessment's first round trip when any decision but require_3ds would claim the low-value exemption (a
        customer-initiated card charge under the line); None when no decision would read it."""
        amount = Money(execution.amount, execution.currency)
        if (
            execution.payment_rail is not PaymentRail.CARD
            or self._unless_3ds_required(initiator_of(execution), amount) is not Exemption.LOW_VALUE
        ):
            return None
        return queue_low_value_usage(self._conn, execution.tenant_id, instrument_key, amount.currency)

    def exemption_within(
        self,
        execution: Execution,
        verdict: Verdict,
        *,
        context: WorkflowWriteContext,
        correlation_id: str | None,
        low_value_usage: Cursor[DictRow] | None = None,
    ) -> AuthenticationStep | None:
        """decide() for a decision just made, inside the assessment's transaction (RiskGate.assess `within`): the
        step when the charge needs no authentication (none applies, or an exemption, recorded here with its event
        so it commits with the decision); None when it must authenticate, which decide() does after the commit (an
        ACS or a provider is never called inside a transaction). The assessment holds the instrument's lock, so the
        low-value counter read here is serialised as _exempt's is; `low_value_usage`: that read, already sent
        (low_value_usage_before)."""
        if execution.payment_rail is not PaymentRail.CARD:
            return AuthenticationStep(StepKind.PROCEED)
        planned = self._planned(execution, verdict)
        if isinstance(planned, AuthenticationStep) or planned is None:
            return planned
        amount = Money(execution.amount, execution.currency)
        if planned is Exemption.LOW_VALUE:
            usage = low_value_usage
            if usage is None:
                usage = queue_low_value_usage(
                    self._conn, execution.tenant_id, verdict.instrument.instrument_key, amount.currency
                )
            if not self._low_value_counter_allows(low_value_usage_of(usage), amount):
                return None
        self._queue_exemption(execution, verdict, planned, uuid4(), context, correlation_id)
        return AuthenticationStep(StepKind.PROCEED, _exempt_instruction(planned))

    def _planned(self, execution: Execution, verdict: Verdict) -> AuthenticationStep | Exemption | None:
        """What PSD2 asks of a card charge without an authentication yet: nothing (a step to proceed), an exemption
        to claim (the low-value one subject to its counter), or None: the customer authenticates."""
        amount = Money(execution.amount, execution.currency)
        if verdict.decision != Action.REQUIRE_3DS.value:
            return self._unless_3ds_required(verdict.initiator, amount)
        if self._risk_analysis_exempts(verdict, amount):
            return Exemption.TRANSACTION_RISK_ANALYSIS
        return None

    def _unless_3ds_required(self, initiator: ChargeInitiator, amount: Money) -> AuthenticationStep | Exemption:
        """What a card charge no rule asked to authenticate claims: the merchant-initiated exemption, the low-value
        one under the line (subject to its counter), or nothing (a step to proceed)."""
        if initiator is ChargeInitiator.MERCHANT:
            return Exemption.MERCHANT_INITIATED
        if not self._low_value(amount):
            return AuthenticationStep(StepKind.PROCEED)
        return Exemption.LOW_VALUE

    def _resume(self, record: AuthenticationRecord, verdict: Verdict) -> AuthenticationStep:
        """A later call for an execution whose authentication exists: never a second one."""
        state = AuthenticationState(record.state) if record.state != "exempted" else None
        if state is None:
            assert record.exemption is not None
            return AuthenticationStep(StepKind.PROCEED, _exempt_instruction(Exemption(record.exemption)), record=record)
        if record.performed_by == "provider":
            return AuthenticationStep(StepKind.PROCEED, _REQUEST, record=record)
        match state:
            case AuthenticationState.STARTED | AuthenticationState.CHALLENGE_REQUIRED:
                return AuthenticationStep(StepKind.WAIT, next_action=self._redirect(record), record=record)
            case AuthenticationState.SUCCEEDED:
                # The value lived only in the memory of the call that received it, which never submitted: it is
                # gone, and a charge without it would go out unauthenticated. The customer starts again.
                return AuthenticationStep(StepKind.REFUSE, error_code="authentication_expired", record=record)
            case AuthenticationState.UNAVAILABLE:
                return self._unavailable(record, verdict)
            case AuthenticationState.FAILED | AuthenticationState.REJECTED | AuthenticationState.EXPIRED:
                return AuthenticationStep(StepKind.REFUSE, error_code=REFUSAL_CODES[state], record=record)

    def _unavailable(self, record: AuthenticationRecord, verdict: Verdict) -> AuthenticationStep:
        # Not enrolled: the card's range has no ACS, so there is nothing to authenticate with; the charge goes on.
        if record.trans_status_reason == NOT_ENROLLED_REASON:
            return AuthenticationStep(StepKind.PROCEED, record=record)
        if verdict.settings.on_authentication_unavailable is UnavailableAuthentication.FAIL:
            return AuthenticationStep(StepKind.REFUSE, error_code="authentication_unavailable", record=record)
        return AuthenticationStep(StepKind.PROCEED, record=record)

    def _low_value(self, amount: Money) -> bool:
        line = SCA_AMOUNT.get(amount.currency)
        return line is not None and amount.amount < line

    def _low_value_counter_allows(self, usage: tuple[int, int], amount: Money) -> bool:
        limit = low_value_limit(amount.currency)
        assert limit is not None, "a currency with a low-value line has a cumulative limit"
        charges, total = usage
        return charges + 1 <= LOW_VALUE_MAX_CHARGES and total + amount.amount <= limit

    def _risk_analysis_exempts(self, verdict: Verdict, amount: Money) -> bool:
        settings = verdict.settings
        ceiling = settings.tra_ceiling.get(amount.currency)
        return (
            verdict.initiator is ChargeInitiator.CUSTOMER
            and settings.tra_score_threshold > 0
            and verdict.record.score < settings.tra_score_threshold
            and ceiling is not None
            and amount.amount <= ceiling
        )

    def _exempt(
        self,
        execution: Execution,
        verdict: Verdict,
        exemption: Exemption,
        context: WorkflowWriteContext,
        correlation_id: str | None,
    ) -> AuthenticationStep | None:
        """Record the exemption with its event in one transaction (one round trip, two for the low-value counter);
        None when the low-value counter is spent. The counter is read under the instrument's lock, so two charges
        on one card cannot both take its last exempted charge."""
        conn, tenant = self._conn, execution.tenant_id
        amount = Money(execution.amount, execution.currency)
        authentication_id = uuid4()
        try:
            with translated_guard_errors(), pipelined_tenant_transaction(conn, tenant):
                if exemption is Exemption.LOW_VALUE:
                    instrument_key = verdict.instrument.instrument_key
                    lock_instrument(conn, tenant, instrument_key)
                    usage = queue_low_value_usage(conn, tenant, instrument_key, amount.currency)
                    if not self._low_value_counter_allows(low_value_usage_of(usage), amount):
                        return None
                inserted = self._queue_exemption(
                    execution, verdict, exemption, authentication_id, context, correlation_id
                )
                # The claim that submits the charge commits normally after this (billing.db.tenancy).
                commit_without_flush_wait(conn)
        except psycopg.errors.UniqueViolation:
            # Decided before, by another call for this execution: that decision stands.
            existing = self._repository.of_execution(tenant, execution.id)
            assert existing is not None, "the conflicting authentication exists"
            return self._resume(existing, verdict)
        row = inserted.fetchone()
        assert row is not None, "an inserted authentication returns its row"
        return AuthenticationStep(StepKind.PROCEED, _exempt_instruction(exemption), record=record_of(row))

    def _queue_exemption(
        self,
        execution: Execution,
        verdict: Verdict,
        exemption: Exemption,
        authentication_id: UUID,
        context: WorkflowWriteContext,
        correlation_id: str | None,
    ) -> Cursor[DictRow]:
        """Send the exempted authentication and its event, in the caller's tenant-scoped transaction."""
        new = self._new(execution, verdict, performed_by="engine", state="exempted", exemption=exemption)
        inserted = self._repository.queue_new(new, authentication_id)
        queue_annotation(
            self._conn, execution.tenant_id, execution.id, AUTHENTICATED_EVENT_TYPE,
            exemption_summary(authentication_id, exemption),
            context=context, correlation_id=correlation_id,
        )  # fmt: skip
        return inserted

    def _new(
        self,
        execution: Execution,
        verdict: Verdict,
        *,
        performed_by: str,
        state: str = "started",
        exemption: Exemption | None = None,
        scheme: str | None = None,
    ) -> NewAuthentication:
        return NewAuthentication(
            tenant_id=execution.tenant_id,
            execution_id=execution.id,
            provider=execution.payment_provider,
            performed_by=performed_by,
            instrument_key=verdict.instrument.instrument_key,
            amount=Money(execution.amount, execution.currency),
            scheme=scheme or verdict.instrument.brand,
            state=state,
            exemption=exemption.value if exemption else None,
            return_url=self._settings.return_url,
        )

    # --- the engine's own 3DS Server, for the sandbox ----------------------------------------------------------

    def _authenticate_at_sandbox(
        self, execution: Execution, verdict: Verdict, context: WorkflowWriteContext, correlation_id: str | None
    ) -> AuthenticationStep:
        token = self._tokens(execution.tenant_id, execution.payment_instrument_id)
        test_number = SANDBOX_3DS_CARDS.get(token or "")
        card = parse_card_number(test_number) if test_number else None
        scheme = card.brand.value if card else verdict.instrument.brand
        record, created = self._repository.start(self._new(execution, verdict, performed_by="engine", scheme=scheme))
        if not created:
            return self._resume(record, verdict)
        if card is None:
            # No card range of the directory holds the card: not enrolled, nothing to authenticate.
            return self._finish_not_enrolled(execution, record, verdict, context, correlation_id)
        areq = build_areq(
            card,
            exp_month=_TEST_EXPIRY[0],
            exp_year=_TEST_EXPIRY[1],
            amount=Money(execution.amount, execution.currency),
            merchant_name=self._merchant_name(execution),
            notification_url=self._settings.notification_url(execution.tenant_id, record.id),
            now=self._clock(),
        )
        answer: AcsAnswer = self._acs.authenticate(areq)
        match answer:
            case NotEnrolled():
                return self._finish_not_enrolled(execution, record, verdict, context, correlation_id)
            case Frictionless(ares=ares):
                parsed = parse_message(ares.to_json())
                assert isinstance(parsed, ARes)
                return self._finish(execution.id, record, parsed, card.brand, verdict, context, correlation_id)
            case ChallengeRequired(ares=ares, session=session):
                parsed = parse_message(ares.to_json())
                assert isinstance(parsed, ARes)
                with tenant_transaction(self._conn, execution.tenant_id):
                    AcsChallengeStore(self._conn).open(
                        AcsChallenge(
                            execution.tenant_id,
                            record.id,
                            self._merchant_name(execution),
                            Money(execution.amount, execution.currency),
                            session,
                        )
                    )
                    moved = self._repository.move(
                        record,
                        Outcome(
                            state=AuthenticationState.CHALLENGE_REQUIRED.value,
                            message_version=parsed.message_version.value,
                            three_ds_server_trans_id=parsed.three_ds_server_trans_id,
                            acs_trans_id=parsed.acs_trans_id,
                            ds_trans_id=parsed.ds_trans_id,
                            trans_status=parsed.trans_status.value,
                            challenge_indicator=areq.members["threeDSRequestorChallengeInd"],
                            challenge_url=parsed.acs_url,
                            expires_at=session.expires_at,
                        ),
                    )
                    assert moved is not None, "the row was inserted by this call"
                    self._event(
                        execution.tenant_id, execution.id, AUTHENTICATION_REQUIRED_EVENT_TYPE, moved, context,
                        correlation_id,
                    )  # fmt: skip
                return AuthenticationStep(StepKind.WAIT, next_action=self._redirect(moved), record=moved)

    def _finish_not_enrolled(
        self,
        execution: Execution,
        record: AuthenticationRecord,
        verdict: Verdict,
        context: WorkflowWriteContext,
        correlation_id: str | None,
    ) -> AuthenticationStep:
        outcome = Outcome(
            state=AuthenticationState.UNAVAILABLE.value, trans_status_reason=NOT_ENROLLED_REASON, liability_shift=False
        )
        with tenant_transaction(self._conn, execution.tenant_id):
            moved = self._repository.move(record, outcome) or record
            self._event(execution.tenant_id, execution.id, AUTHENTICATED_EVENT_TYPE, moved, context, correlation_id)
        return self._unavailable(moved, verdict)

    def _finish(
        self,
        execution_id: UUID,
        record: AuthenticationRecord,
        message: ARes | RReq,
        brand: CardBrand,
        verdict: Verdict | None,
        context: WorkflowWriteContext,
        correlation_id: str | None,
    ) -> AuthenticationStep:
        """Record a final ARes or RReq and say what the charge does with it."""
        classified = classify(message, brand=brand)
        value = message.authentication_value
        outcome = Outcome(
            state=classified.state.value,
            message_version=message.message_version.value,
            three_ds_server_trans_id=message.three_ds_server_trans_id,
            acs_trans_id=message.acs_trans_id,
            ds_trans_id=message.ds_trans_id,
            trans_status=message.trans_status.value,
            trans_status_reason=message.trans_status_reason,
            eci=message.eci,
            value_digest=value_digest(value) if value else None,
            liability_shift=classified.liability_shifted,
        )
        with tenant_transaction(self._conn, record.tenant_id):
            moved = self._repository.move(record, outcome)
            if moved is None:
                # Ended by another writer (the sweep, a second RReq): its outcome stands, this message changes nothing.
                current = self._repository.get(record.tenant_id, record.id)
                assert current is not None
                return AuthenticationStep(StepKind.WAIT, record=current)
            self._event(record.tenant_id, execution_id, AUTHENTICATED_EVENT_TYPE, moved, context, correlation_id)
        if classified.state is AuthenticationState.SUCCEEDED and value is not None:
            if not self._repository.use_value(moved, value, actor=context.actor):
                return AuthenticationStep(StepKind.REFUSE, error_code="authentication_expired", record=moved)
            data = AuthenticationData(
                trans_status=message.trans_status.value,
                eci=message.eci or "",
                authentication_value=value,
                three_ds_server_trans_id=message.three_ds_server_trans_id,
                ds_trans_id=message.ds_trans_id,
                message_version=message.message_version.value,
            )
            return AuthenticationStep(
                StepKind.PROCEED, ThreeDSecureInstruction(ThreeDSecureMode.AUTHENTICATED, data=data), record=moved
            )
        if classified.state is AuthenticationState.UNAVAILABLE and verdict is not None:
            return self._unavailable(moved, verdict)
        if classified.state is AuthenticationState.UNAVAILABLE:
            return AuthenticationStep(StepKind.PROCEED, record=moved)
        code = REFUSAL_CODES.get(classified.state, "authentication_failed")
        return AuthenticationStep(StepKind.REFUSE, error_code=code, record=moved)

    def receive_rreq(
        self,
        tenant_id: UUID,
        authentication_id: UUID,
        rreq: WireMessage,
        *,
        unavailable: UnavailableAuthentication,
        context: WorkflowWriteContext,
    ) -> AuthenticationStep:
        """The ACS's result of a challenge (the RReq, from the sandbox ACS in this process)."""
        record = self._repository.get(tenant_id, authentication_id)
        parsed = parse_message(rreq.to_json())
        if record is None or not isinstance(parsed, RReq) or parsed.acs_trans_id != record.acs_trans_id:
            raise ValueError("the RReq names no challenge of this authentication")
        brand = CardBrand(record.scheme) if record.scheme else CardBrand.VISA
        step = self._finish(record.execution_id, record, parsed, brand, None, context, None)
        unavailable_fails = unavailable is UnavailableAuthentication.FAIL
        if step.kind is StepKind.PROCEED and parsed.trans_status is TransStatus.NOT_PERFORMED and unavailable_fails:
            return AuthenticationStep(StepKind.REFUSE, error_code="authentication_unavailable", record=step.record)
        return step

    # --- provider-run 3-D Secure ------------------------------------------------------------------------------

    def record_provider_result(
        self,
        execution: Execution,
        reported: ProviderAuthentication | None,
        *,
        context: WorkflowWriteContext,
        correlation_id: str | None,
    ) -> AuthenticationRecord | None:
        """What Stripe or Adyen said of the authentication they ran, on the execution's row (provider-run only)."""
        if reported is None:
            return None
        record = self._repository.of_execution(execution.tenant_id, execution.id)
        if record is None or record.performed_by != "provider" or not record.open:
            return record
        outcome = provider_outcome(reported, record.scheme)
        if outcome is None:
            return record
        with tenant_transaction(self._conn, execution.tenant_id):
            moved = self._repository.move(record, outcome)
            if moved is not None:
                event = (
                    AUTHENTICATION_REQUIRED_EVENT_TYPE
                    if moved.state == AuthenticationState.CHALLENGE_REQUIRED.value
                    else AUTHENTICATED_EVENT_TYPE
                )
                self._event(execution.tenant_id, execution.id, event, moved, context, correlation_id)
        return moved or record

    # --- helpers ---------------------------------------------------------------------------------------------------

    def _merchant_name(self, execution: Execution) -> str:
        name = execution.metadata.get("merchant_name")
        return name[:40] if isinstance(name, str) and name.strip() else self._settings.merchant_name

    def redirect_for(self, record: AuthenticationRecord) -> NextAction:
        """Where the customer's browser goes to finish an authentication that waits for them."""
        return self._redirect(record)

    def _redirect(self, record: AuthenticationRecord) -> NextAction:
        return NextAction(
            NextActionType.REDIRECT_TO_URL,
            url=self._settings.challenge_url(record.tenant_id, record.id),
            return_url=record.return_url,
        )

    def _event(
        self,
        tenant_id: UUID,
        execution_id: UUID,
        event_type: str,
        record: AuthenticationRecord,
        context: WorkflowWriteContext,
        correlation_id: str | None,
    ) -> None:
        annotate(
            self._conn, tenant_id, execution_id, event_type, authentication_summary(record),
            context=context, correlation_id=correlation_id,
        )  # fmt: skip


_REQUEST: Final = ThreeDSecureInstruction(ThreeDSecureMode.REQUEST)


def _exempt_instruction(exemption: Exemption) -> ThreeDSecureInstruction:
    return ThreeDSecureInstruction(ThreeDSecureMode.EXEMPT, exemption=exemption)


def exemption_summary(authentication_id: UUID, exemption: Exemption) -> dict[str, object]:
    """authentication_summary of an exempted authentication, known before its row is read back."""
    return {
        "authentication_id": str(authentication_id),
        "state": "exempted",
        "performed_by": "engine",
        "exemption": exemption.value,
        "trans_status": None,
        "trans_status_reason": None,
        "eci": None,
        "liability_shift": False,
        "message_version": None,
    }


def authentication_summary(record: AuthenticationRecord) -> dict[str, object]:
    """The authentication as events and the API show it: never its value, nor the digest of it."""
    return {
        "authentication_id": str(record.id),
        "state": record.state,
        "performed_by": record.performed_by,
        "exemption": record.exemption,
        "trans_status": record.trans_status,
        "trans_status_reason": record.trans_status_reason,
        "eci": record.eci,
        "liability_shift": bool(record.liability_shift),
        "message_version": record.message_version,
    }


_PROVIDER_STATES: Final = {
    "Y": AuthenticationState.SUCCEEDED,
    "A": AuthenticationState.SUCCEEDED,
    "N": AuthenticationState.FAILED,
    "R": AuthenticationState.REJECTED,
    "U": AuthenticationState.UNAVAILABLE,
    "C": AuthenticationState.CHALLENGE_REQUIRED,
    "D": AuthenticationState.CHALLENGE_REQUIRED,
}


def provider_outcome(reported: ProviderAuthentication, scheme: str | None) -> Outcome | None:
    """The row's next state from a provider's report; None when it says nothing the row can use."""
    if reported.exemption is not None and reported.trans_status is None:
        return None
    state = _PROVIDER_STATES.get(reported.trans_status or "")
    if state is None:
        return None
    shift: bool | None = None
    if state is AuthenticationState.SUCCEEDED:
        shift = reported.liability_shift
        if shift is None and scheme:
            try:
                brand = CardBrand(scheme)
            except ValueError:
                brand = None
            if brand is not None:
                shift = liability_for(
                    brand, reported.eci, has_authentication_value=reported.authentication_value_present
                ).shifted
    return Outcome(
        state=state.value,
        message_version=reported.message_version,
        ds_trans_id=reported.ds_trans_id,
        trans_status=reported.trans_status,
        eci=reported.eci,
        liability_shift=bool(shift) if state is AuthenticationState.SUCCEEDED else None,
    )
