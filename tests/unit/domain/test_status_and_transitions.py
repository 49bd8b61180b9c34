from __future__ import annotations

import itertools

import pytest

from billing.domain.status import ALLOWED_TRANSITIONS, ExecutionStatus, can_transition, is_terminal
from billing.domain.transitions import TRANSITIONS, TransitionMethod
from billing.domain.workflow import BillingWorkflowConfig, WorkflowPhase

S = ExecutionStatus


def test_allowed_transitions_are_exactly_the_nine_of_the_state_machine() -> None:
    assert {
        (S.CREATED, S.PENDING), (S.CREATED, S.CANCELED), (S.PENDING, S.PROCESSING), (S.PENDING, S.CANCELED),
        (S.PENDING, S.COMPLETED), (S.PENDING, S.FAILED), (S.PROCESSING, S.COMPLETED), (S.PROCESSING, S.FAILED),
        (S.PROCESSING, S.PENDING),
    } == ALLOWED_TRANSITIONS  # fmt: skip


def test_terminal_statuses_have_no_outgoing_transition() -> None:
    for old, new in itertools.product(S, S):
        if is_terminal(old):
            assert not can_transition(old, new)


def test_every_transition_method_is_specified_and_stays_inside_the_machine() -> None:
    assert set(TRANSITIONS) == set(TransitionMethod)
    for spec in TRANSITIONS.values():
        for old, new in itertools.product(spec.from_statuses, spec.to_statuses):
            assert can_transition(old, new)


def test_transition_event_types_are_unique() -> None:
    types = [spec.event_type for spec in TRANSITIONS.values()]
    assert len(types) == len(set(types))


def test_every_allowed_transition_is_reachable_through_some_method() -> None:
    covered = {(old, new) for spec in TRANSITIONS.values() for old in spec.from_statuses for new in spec.to_statuses}
    assert covered == ALLOWED_TRANSITIONS


def test_workflow_config_has_eight_phase_codes_and_canonical_key() -> None:
    assert BillingWorkflowConfig.WORKFLOW_KEY == "wf:billing.execution"
    assert BillingWorkflowConfig.TARGET_TABLE == "billing.contract_term_datetimes"
    assert len(BillingWorkflowConfig.PHASE_CODES) == 8
    assert {WorkflowPhase.SETTLEMENT_PENDING, WorkflowPhase.RECONCILED} <= set(BillingWorkflowConfig.PHASE_CODES)


@pytest.mark.parametrize("status", list(S))
def test_phase_for_status_maps_each_state_to_its_phase(status: ExecutionStatus) -> None:
    assert BillingWorkflowConfig.phase_for_status(status).value == status.value
