"""Local containers are processes: concurrent invocations through the local gateway never see each other's state.

The stand-in function is a Powertools REST resolver with a Powertools logger, as our handlers are. Each invocation
records its request id where process state lives (the resolver's current event, the logger's appended keys,
os.environ), then waits at a gate that opens only once every concurrent invocation has reached it, and reads the
id back. In containers sharing one process (Isolation.THREAD) every one of them reads the last id written; in
process containers each reads its own.
"""

from __future__ import annotations

import json
import os
import socket
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from billing import resource_names as names
from billing.local.api_gateway import HttpRequest, HttpResponse, Isolation, LocalApiGateway, LocalFunctions
from billing.resource_names import FunctionName

WEBHOOK = f"{names.API_BASE_PATH}/webhook/sandbox"
CONCURRENT = 4

PROBE_HANDLER = """
import json
import os
import socket

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver

logger = Logger(service="isolation-probe")
app = APIGatewayRestResolver()


@app.post("/api/v1/billing/webhook/<provider>")
def probe(provider):
    behaviour = app.current_event.headers.get("X-Probe", "gate")
    if behaviour == "raise":
        raise RuntimeError("probe failed on purpose")
    if behaviour == "exit":
        os._exit(3)
    mine = app.current_event.request_context.request_id
    os.environ["PROBE_REQUEST_ID"] = mine
    logger.append_keys(probe_request_id=mine)
    if behaviour == "gate":
        gate = socket.create_connection(("127.0.0.1", int(app.current_event.headers["X-Gate-Port"])), timeout=30)
        gate.recv(1)
        gate.close()
    logger.info("probe done")
    return {
        "sent": mine,
        "current_event": app.current_event.request_context.request_id,
        "environ": os.environ["PROBE_REQUEST_ID"],
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        "service": os.environ.get("POWERTOOLS_SERVICE_NAME"),
        "pid": os.getpid(),
    }


@logger.inject_lambda_context
def lambda_handler(event, context):
    if (event.get("headers") or {}).get("X-Probe") == "unmarshallable":
        return {"statusCode": 200, "body": "", "headers": {"X-Set": {"not", "json"}}}
    return app.resolve(event, context)
"""


class Gate:
    """Opens (sends a byte to every caller) once `expected` callers have connected: they all wait at once."""

    def __init__(self, expected: int) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(60)
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._open_when_full, args=(expected,), daemon=True)
        self._thread.start()

    def _open_when_full(self, expected: int) -> None:
        callers = [self._server.accept()[0] for _ in range(expected)]
        for caller in callers:
            caller.sendall(b"x")
            caller.close()
        self._server.close()


def _functions_dir(root: Path) -> Path:
    (root / "webhook").mkdir(parents=True)
    (root / "webhook" / "handler.py").write_text(textwrap.dedent(PROBE_HANDLER))
    return root


@pytest.fixture(scope="module")
def functions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _functions_dir(tmp_path_factory.mktemp("functions"))


@pytest.fixture(scope="module")
def gateway(functions_dir: Path) -> Iterator[LocalApiGateway]:
    with LocalFunctions(functions_dir) as functions:
        yield LocalApiGateway(functions)


def _post(gateway: LocalApiGateway, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    request = HttpRequest("POST", WEBHOOK, "", (("Content-Type", "application/json"), *headers), b"{}")
    return gateway.handle(request)


def _concurrently(gateway: LocalApiGateway, count: int = CONCURRENT) -> list[dict[str, Any]]:
    gate = Gate(count)
    with ThreadPoolExecutor(count) as pool:
        responses = list(pool.map(lambda _: _post(gateway, (("X-Gate-Port", str(gate.port)),)), range(count)))
    assert [r.status for r in responses] == [200] * count, [r.body for r in responses]
    return [r.json() for r in responses]


def _probe_lines(output: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == "probe done"]


def test_concurrent_invocations_each_see_only_their_own_request(
    gateway: LocalApiGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = _concurrently(gateway)

    for answer in answers:
        assert answer["current_event"] == answer["sent"]
        assert answer["environ"] == answer["sent"]
    assert len({answer["sent"] for answer in answers}) == CONCURRENT
    assert len({answer["pid"] for answer in answers}) == CONCURRENT
    assert os.getpid() not in {answer["pid"] for answer in answers}
    # The function's log is this process's stdout, each line carrying its own invocation's ids.
    lines = _probe_lines(capsys.readouterr().out)
    assert sorted(line["function_request_id"] for line in lines) == sorted(a["sent"] for a in answers)
    assert all(line["probe_request_id"] == line["function_request_id"] for line in lines)


def test_what_an_invocation_sets_in_os_environ_stays_in_its_container(gateway: LocalApiGateway) -> None:
    answers = _concurrently(gateway)

    assert "PROBE_REQUEST_ID" not in os.environ
    assert {answer["service"] for answer in answers} == {names.service_name(FunctionName.WEBHOOK)}
    # The runtime's per-invocation trace id, from the request API Gateway traced.
    assert all(answer["trace"].startswith("Root=1-") for answer in answers)
    assert len({answer["trace"] for answer in answers}) == CONCURRENT


def test_in_process_containers_share_what_process_containers_keep_apart(functions_dir: Path) -> None:
    # Why the local stack runs containers as processes: in one process, the resolver's current event is a class
    # attribute, so every invocation that waited at the gate reads the one written last.
    with LocalFunctions(functions_dir, isolation=Isolation.THREAD) as functions:
        answers = _concurrently(LocalApiGateway(functions))

    assert len({answer["current_event"] for answer in answers}) == 1
    assert sum(answer["current_event"] != answer["sent"] for answer in answers) == CONCURRENT - 1


def test_a_container_serves_one_invocation_at_a_time_and_stays_warm(gateway: LocalApiGateway) -> None:
    pids = {answer["pid"] for answer in _concurrently(gateway)}

    again = [_post(gateway, (("X-Probe", "plain"),)).json()["pid"] for _ in range(3)]

    assert set(again) <= pids  # warm containers reused one after the other, no new cold start


def test_function_error_is_502_and_its_traceback_is_in_the_function_log(
    gateway: LocalApiGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = _post(gateway, (("X-Probe", "raise"),))

    assert (failed.status, failed.json()["code"]) == (502, "function_error")
    output = capsys.readouterr().out
    assert "[ERROR] RuntimeError: probe failed on purpose" in output
    assert "Traceback" in output
    assert _post(gateway, (("X-Probe", "plain"),)).status == 200


def test_a_container_that_exits_is_replaced_by_a_new_one(functions_dir: Path) -> None:
    # One container at most: had the dead one kept its slot, the next request would find none.
    with LocalFunctions(functions_dir, concurrency={FunctionName.WEBHOOK: 1}) as functions:
        gateway = LocalApiGateway(functions, queue_seconds=5)
        first = _post(gateway, (("X-Probe", "plain"),)).json()["pid"]

        died = _post(gateway, (("X-Probe", "exit"),))
        replaced = _post(gateway, (("X-Probe", "plain"),))

    assert (died.status, died.json()["code"]) == (502, "function_error")
    assert replaced.status == 200
    assert replaced.json()["pid"] != first


def test_a_result_that_does_not_marshal_is_502(gateway: LocalApiGateway, capsys: pytest.CaptureFixture[str]) -> None:
    response = _post(gateway, (("X-Probe", "unmarshallable"),))

    assert (response.status, response.json()["code"]) == (502, "function_error")
    assert "[ERROR] Runtime.MarshalError: Unable to marshal response" in capsys.readouterr().out


def test_import_error_is_502_and_a_module_without_handler_is_not_deployed(tmp_path: Path) -> None:
    root = tmp_path / "functions"
    (root / "webhook").mkdir(parents=True)
    (root / "webhook" / "handler.py").write_text("import module_that_does_not_exist\n")
    (root / "execute").mkdir()
    (root / "execute" / "handler.py").write_text("HANDLER = None\n")
    with LocalFunctions(root) as functions:
        broken = LocalApiGateway(functions).handle(HttpRequest("POST", WEBHOOK, body=b"{}"))
        with pytest.raises(LookupError, match="has no lambda_handler"):
            functions.invoke(FunctionName.EXECUTE, {})

    assert (broken.status, broken.json()["code"]) == (502, "function_error")
