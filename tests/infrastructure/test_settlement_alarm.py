"""The settlement report's payout alarms and its bus grant, as synthesized."""

from __future__ import annotations

from billing import resource_names as names
from billing.resource_names import FunctionName, ReportPeriod
from billing.settlement.observability import PAYOUT_MISMATCH_METRIC
from tests.infrastructure import cfn
from tests.infrastructure.conftest import Synthesized


def test_a_payout_that_does_not_balance_alarms_on_the_alarm_topic_for_daily_and_weekly_runs(dev: Synthesized) -> None:
    alarms = {
        dimensions["period"]: alarm["Properties"]
        for alarm in cfn.of_type(dev.raw["data"], "AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("MetricName") == PAYOUT_MISMATCH_METRIC
        for dimensions in [{d["Name"]: d["Value"] for d in alarm["Properties"]["Dimensions"]}]
    }
    topic_id, _ = next(iter(cfn.of_type(dev.raw["data"], "AWS::SNS::Topic").items()))

    assert set(alarms) == {p.value for p in ReportPeriod}
    for period, alarm in alarms.items():
        assert (alarm["Namespace"], alarm["Statistic"]) == (names.METRICS_NAMESPACE, "Sum")
        assert sorted((d["Name"], d["Value"]) for d in alarm["Dimensions"]) == [
            ("period", period),
            ("service", names.service_name(FunctionName.SETTLEMENT_REPORT)),
        ]
        assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["TreatMissingData"]) == (
            "GreaterThanThreshold",
            0,
            "notBreaching",
        )
        assert alarm["AlarmActions"] == [{"Ref": topic_id}]


def test_the_settlement_function_may_put_events_and_knows_its_bus(dev: Synthesized) -> None:
    service = dev.raw["service"]
    function = cfn.of_type(service, "AWS::Lambda::Function")[cfn.function_id(service, FunctionName.SETTLEMENT_REPORT)]

    assert names.ENV_EVENT_BUS_NAME in function["Properties"]["Environment"]["Variables"]
