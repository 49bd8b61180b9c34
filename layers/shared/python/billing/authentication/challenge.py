"""The browser side of a 3-D Secure challenge: the pages the customer moves through, and what each step does.

1. The execution's next_action sends the browser to GET .../3ds/{tenant}/{authentication}/challenge, which posts the
   EMV CReq (base64url, form field `creq`) to the acsURL the ARes named, as a 3DS Requestor's page does.
2. The sandbox ACS (POST .../sandbox-acs/{acsTransID}) shows the challenge: merchant, amount, a one-time code field
   and a cancel button. A wrong code shows the attempts left; the third wrong one ends it N, cancel ends it too.
3. When the challenge ends the ACS sends its RReq to the engine's 3DS Server (here: a call in this process, as the
   directory server would relay it) and the execution goes on at once: submitted with the ECI and authentication
   value while the value is in memory, or refused. Then the browser posts the final CRes to the notificationURL.
4. POST .../3ds/{tenant}/{authentication}/notify shows where the payment stands and links back to the merchant.

Every id in these URLs is a random UUID the customer's browser was handed: the pages read nothing else, and a
wrong or finished id shows a page saying so, never another customer's challenge.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from billing.authentication.flow import StepKind, ThreeDSecure
from billing.authentication.messages import CRes, parse_message
from billing.authentication.pages import auto_post_page, challenge_page, result_page
from billing.authentication.protocol import MessageType
from billing.authentication.sandbox_acs import (
    ChallengeProgress,
    ChallengeSession,
    ChallengeStep,
    SandboxAcs,
    build_cres,
    build_rreq,
)
from billing.authentication.store import AcsChallenge, AcsChallengeStore
from billing.authentication.wire import WireMessage
from billing.db.execution_repository import ExecutionRepository
from billing.domain.errors import EmvMessageInvalid
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.risk.postgres import RuleSetStore
from billing.services.execution_driver import ExecutionDriver

CHALLENGE_WINDOW_FULL_SCREEN: Final = "05"
_ACTOR: Final = "customer:3ds-challenge"


def encode_message(message: WireMessage) -> str:
    """base64url without padding, as EMV's browser flow posts a CReq or CRes."""
    raw = json.dumps(message.to_json(), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_message(field: str) -> WireMessage | None:
    """The message in a posted `creq`/`cres` field, through the engine's parser; None for anything it refuses."""
    try:
        parse_message({"body": field})
    except EmvMessageInvalid:
        return None
    padded = field + "=" * (-len(field) % 4)
    return WireMessage(json.loads(base64.urlsafe_b64decode(padded)))


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    html: str


def _gone(message: str) -> Page:
    return Page(404, result_page(title="Authentication", message=message, return_url=None))


class ChallengeService:
    def __init__(
        self,
        three_ds: ThreeDSecure,
        driver: ExecutionDriver,
        repository: ExecutionRepository,
        acs: SandboxAcs,
        challenges: AcsChallengeStore,
        rule_sets: RuleSetStore,
        *,
        acs_page_url: str,
    ) -> None:
        self._three_ds = three_ds
        self._driver = driver
        self._repository = repository
        self._acs = acs
        self._challenges = challenges
        self._rule_sets = rule_sets
        # Where the ACS's own pages are: /sandbox-acs/{acsTransID}/code and /cancel.
        self._acs_page_url = acs_page_url.rstrip("/")

    # --- the 3DS Requestor's pages ----------------------------------------------------------------------------

    def start(self, tenant_id: UUID, authentication_id: UUID) -> Page:
        record = self._three_ds.repository.get(tenant_id, authentication_id)
        if record is None:
            return _gone("This authentication does not exist.")
        if record.state != "challenge_required" or not record.challenge_url or not record.acs_trans_id:
            return Page(200, self._outcome_page(tenant_id, record.execution_id, record.return_url))
        creq = WireMessage(
            {
                "messageType": MessageType.CREQ,
                "messageVersion": record.message_version or "2.2.0",
                "threeDSServerTransID": record.three_ds_server_trans_id or "",
                "acsTransID": record.acs_trans_id,
                "challengeWindowSize": CHALLENGE_WINDOW_FULL_SCREEN,
            }
        )
        return Page(
            200,
            auto_post_page(title="Verifying your card", action_url=record.challenge_url,
                           fields={"creq": encode_message(creq)}),
        )  # fmt: skip

    def notified(self, tenant_id: UUID, authentication_id: UUID, cres_field: str) -> Page:
        record = self._three_ds.repository.get(tenant_id, authentication_id)
        message = decode_message(cres_field)
        parsed = parse_message(message.to_json()) if message else None
        if record is None or not isinstance(parsed, CRes) or parsed.acs_trans_id != record.acs_trans_id:
            return _gone("This authentication does not exist.")
        return Page(200, self._outcome_page(tenant_id, record.execution_id, record.return_url))

    def _outcome_page(self, tenant_id: UUID, execution_id: UUID, return_url: str | None) -> str:
        execution = self._repository.get(tenant_id, execution_id)
        status = execution.status if execution else None
        if status is ExecutionStatus.COMPLETED:
            message = "Payment completed."
        elif status is ExecutionStatus.FAILED:
            message = f"Payment failed ({execution.last_error_code if execution else 'unknown'})."
        elif status is ExecutionStatus.CANCELED:
            message = "Payment canceled."
        else:
            message = "Payment is being processed."
        return result_page(title="Payment", message=message, return_url=return_url)

    # --- the sandbox ACS's pages ------------------------------------------------------------------------------

    def acs_open(self, acs_trans_id: str, creq_field: str) -> Page:
        found = self._challenges.get(acs_trans_id)
        creq = decode_message(creq_field)
        if found is None or creq is None:
            return _gone("This challenge does not exist.")
        challenge, status = found
        if status != "open":
            return _gone("This challenge has ended.")
        try:
            step = self._acs.receive_creq(challenge.session, creq)
        except EmvMessageInvalid:
            return _gone("This challenge does not exist.")
        return self._after(challenge, step)

    def acs_code(self, acs_trans_id: str, code: str) -> Page:
        found = self._open(acs_trans_id)
        if isinstance(found, Page):
            return found
        return self._after(found, self._acs.submit_code(found.session, code[:32]), wrong="That code is not right.")

    def acs_cancel(self, acs_trans_id: str) -> Page:
        found = self._open(acs_trans_id)
        if isinstance(found, Page):
            return found
        return self._after(found, self._acs.cancel(found.session))

    def _open(self, acs_trans_id: str) -> AcsChallenge | Page:
        found = self._challenges.get(acs_trans_id)
        if found is None:
            return _gone("This challenge does not exist.")
        challenge, status = found
        if status != "open":
            return _gone("This challenge has ended.")
        return challenge

    def _after(self, challenge: AcsChallenge, step: ChallengeStep, *, wrong: str | None = None) -> Page:
        session = step.session
        match step.progress:
            case ChallengeProgress.WAITING | ChallengeProgress.WRONG_CODE:
                if not self._challenges.save(session):
                    return _gone("This challenge has ended.")
                error = wrong if step.progress is ChallengeProgress.WRONG_CODE else None
                return Page(200, self._challenge_page(challenge, session, error))
            case ChallengeProgress.ALREADY_ENDED:
                return _gone("This challenge has ended.")
            case ChallengeProgress.ENDED:
                if not self._challenges.save(session):
                    return _gone("This challenge has ended.")
                self._continue(challenge, session)
                cres = build_cres(session)
                return Page(
                    200,
                    auto_post_page(title="Returning to the merchant", action_url=session.notification_url,
                                   fields={"cres": encode_message(cres)}),
                )  # fmt: skip

    def _continue(self, challenge: AcsChallenge, session: ChallengeSession) -> None:
        """The RReq to the 3DS Server, and the execution driven on with its result."""
        context = WorkflowWriteContext.user(_ACTOR)
        unavailable = self._rule_sets.current(challenge.tenant_id).rule_set.settings.on_authentication_unavailable
        step = self._three_ds.receive_rreq(
            challenge.tenant_id, challenge.authentication_id, build_rreq(session), unavailable=unavailable,
            context=context,
        )  # fmt: skip
        if step.kind is StepKind.WAIT or step.record is None:
            return
        execution = self._repository.get(challenge.tenant_id, step.record.execution_id)
        if execution is None:
            return
        self._driver.drive_with_action(execution, correlation_id=None, context=context, step=step)

    def _challenge_page(self, challenge: AcsChallenge, session: ChallengeSession, error: str | None) -> str:
        base = f"{self._acs_page_url}/{session.acs_trans_id}"
        return challenge_page(
            merchant_name=challenge.merchant_name,
            amount=challenge.amount,
            attempts_left=session.attempts_left,
            code_action_url=f"{base}/code",
            cancel_action_url=f"{base}/cancel",
            error=error,
        )
