from __future__ import annotations

import dataclasses

import pytest

from billing.domain.workflow import WorkflowSource, WorkflowWriteContext


@pytest.mark.parametrize(
    ("context", "source", "actor"),
    [
        (WorkflowWriteContext.service_default(), WorkflowSource.SERVICE, "billing-engine"),
        (WorkflowWriteContext.webhook("stripe"), WorkflowSource.WEBHOOK, "provider:stripe"),
        (WorkflowWriteContext.user("u-42"), WorkflowSource.USER, "user:u-42"),
        (WorkflowWriteContext.system(), WorkflowSource.SYSTEM, "billing-system"),
    ],
)
def test_constructors_set_source_and_actor(context: WorkflowWriteContext, source: WorkflowSource, actor: str) -> None:
    assert (context.source, context.actor) == (source, actor)


def test_context_is_immutable() -> None:
    context = WorkflowWriteContext.system()
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.actor = "someone-else"  # type: ignore[misc]


def test_context_with_empty_actor_is_rejected() -> None:
    with pytest.raises(ValueError, match="actor"):
        WorkflowWriteContext(WorkflowSource.USER, "")
