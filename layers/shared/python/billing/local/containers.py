"""Lambda containers for local runs: each container a process of its own, running one invocation at a time.

In Lambda every container is its own execution environment: its own process, its own `os.environ`, its own import
of the handler and of the layer. Nothing one invocation sets can be seen by an invocation running beside it: not
the Powertools logger's appended keys (request id, correlation id, tenant), not the event the REST resolver is
resolving (Powertools keeps it on a class, `BaseRouter.current_event`, shared by every resolver in a process), not
the metrics a handler has not flushed yet (kept on the Metrics class too), not a variable set in `os.environ`.
Containers that are module instances in one process share all of that, and under concurrent load a request read
another one's headers (its Idempotency-Key: a replay of someone else's execution) and logged another's ids.

So each container here is a process, forked from a *zygote*: one process per `LocalFunctions` that imported the
third-party packages every function needs (boto3, psycopg, pydantic, Powertools: no code of ours, nothing that
reads the environment) and then only forks. A new container costs a fork plus the import of its handler and of the
billing package, tens of milliseconds instead of a fresh interpreter's second, as a runtime with its libraries
already loaded would. The container sets its environment (the stack's plus the function's own), imports its
handler by file path, and answers invocations one at a time over a socket: the event in; the result, or the error
as Lambda reports it, out, with everything the invocation wrote to stdout and stderr (its log). The caller writes
that log to its own stdout, where the functions' logs go, before the invocation returns, so whoever reads stdout
after a request (the demo's handler log) finds the request's lines there.

A container exits when its socket closes (the stack stopped, or the process that started it died), and the zygote
when its own socket does: nothing outlives the stack.
"""

from __future__ import annotations

import contextlib
import decimal
import importlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NoReturn
from uuid import uuid4

from aws_lambda_powertools.utilities.typing import LambdaContext

LOCAL_REGION: Final = "eu-west-1"
# moto's default account; the local stack's ARNs all carry it.
LOCAL_ACCOUNT_ID: Final = "123456789012"
# API Gateway stops waiting for an integration after 29 s; locally the deadline is only reported, never enforced.
DEFAULT_TIMEOUT_SECONDS: Final = 29.0
DEFAULT_MEMORY_MB: Final = 512
# Imported by the zygote before it forks: the third-party packages of the layer, which every container would import
# again (the bare stack of bench/cold_start_imports.py; Powertools' request validation and the provider SDKs, which
# the functions load on their first request: a second of CPU each, ten containers starting at once on a laptop's two
# cores would wait ten seconds). Nothing of ours: the billing package is imported by each container, under its own
# environment, as in Lambda. Cold starts are measured in fresh interpreters by bench/cold_start_imports.py, not here.
PRELOADED_MODULES: Final = (
    "boto3",
    "botocore.client",
    "botocore.session",
    "psycopg",
    "pydantic",
    "jwt",
    "cryptography.hazmat.primitives.ciphers.aead",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.event_handler.openapi.params",
    "aws_lambda_powertools.event_handler.middlewares.openapi_validation",
    "stripe",
    "Adyen",
)
# What the Lambda runtime sets before each invocation (Powertools' logger reads it into `xray_trace_id`). Safe to
# set here only because a container runs one invocation at a time, in a process of its own.
TRACE_ID_VARIABLE: Final = "_X_AMZN_TRACE_ID"
_LENGTH: Final = struct.Struct("!Q")
# A container spec (its environment) fits one datagram of the zygote's socket with room to spare.
_ZYGOTE_MESSAGE_BYTES: Final = 1 << 20
# Lambda's runtime marshals results with json.dumps and a Decimal fallback: anything else is Runtime.MarshalError.
_MARSHAL_ERROR: Final = "Runtime.MarshalError"
_EXIT_ERROR: Final = "Runtime.ExitError"
_stdout_lock = threading.Lock()


class FunctionNotDeployed(LookupError):
    """functions/<name>/handler.py does not exist (yet) or has no lambda_handler."""


class FunctionError(Exception):
    """What a function raised (or how its container failed), as Lambda reports it: errorType, errorMessage.

    str() is the errorMessage alone, as the caller of a Lambda function sees it (API Gateway reads a token
    authorizer's `Unauthorized` that way).
    """

    def __init__(self, error_type: str, message: str, stack_trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.stack_trace = stack_trace or []


class LocalLambdaContext(LambdaContext):
    """What the Lambda runtime passes as `context`, for one invocation of a local function."""

    def __init__(
        self,
        function_name: str,
        *,
        region: str = LOCAL_REGION,
        account_id: str = LOCAL_ACCOUNT_ID,
        memory_limit_in_mb: int = DEFAULT_MEMORY_MB,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        request_id: str | None = None,
    ) -> None:
        self._function_name = function_name
        self._function_version = "$LATEST"
        self._invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self._memory_limit_in_mb = memory_limit_in_mb
        self._aws_request_id = request_id or str(uuid4())
        self._log_group_name = f"/aws/lambda/{function_name}"
        self._log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid4().hex}"
        self._tenant_id = None
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True, slots=True)
class Invocation:
    """One invocation's identity and limits: what the runtime builds the context and the trace id from."""

    function_name: str
    region: str
    account_id: str
    memory_mb: int
    timeout_seconds: float
    request_id: str
    trace_id: str

    def context(self) -> LocalLambdaContext:
        return LocalLambdaContext(
            self.function_name,
            region=self.region,
            account_id=self.account_id,
            memory_limit_in_mb=self.memory_mb,
            timeout_seconds=self.timeout_seconds,
            request_id=self.request_id,
        )


def trace_id_for(event: Mapping[str, Any]) -> str:
    """The _X_AMZN_TRACE_ID of an invocation: the API Gateway request's trace (its X-Amzn-Trace-Id), else a new one."""
    headers = event.get("headers") if isinstance(event, Mapping) else None
    root = headers.get("X-Amzn-Trace-Id") if isinstance(headers, Mapping) else None
    if not isinstance(root, str) or not root.startswith("Root="):
        root = f"Root=1-{int(time.time()):08x}-{uuid4().hex[:24]}"
    return f"{root};Parent={uuid4().hex[:16]};Sampled=0"


def write_function_output(text: str) -> None:
    """A container's log, written to this process's stdout in one piece (lines of concurrent containers never mix)."""
    if not text:
        return
    with _stdout_lock:
        sys.stdout.write(text)
        sys.stdout.flush()


# --- framing ----------------------------------------------------------------------------------------------------


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def _receive(sock: socket.socket) -> Any | None:
    """The next document on the socket; None when the other side has closed it."""
    header = _read_exactly(sock, _LENGTH.size)
    if header is None:
        return None
    (size,) = _LENGTH.unpack(header)
    payload = _read_exactly(sock, size)
    return None if payload is None else json.loads(payload)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 20))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _encode(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), default=_decimal_default).encode()


def _decimal_default(value: Any) -> Any:
    # The Lambda runtime's own fallback (bootstrap's decimal_serializer); everything else does not marshal.
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _error_document(error: BaseException) -> dict[str, Any]:
    return {
        "errorType": type(error).__name__,
        "errorMessage": str(error),
        "stackTrace": traceback.format_tb(error.__traceback__),
    }


# --- the parent's side ------------------------------------------------------------------------------------------


class Zygote:
    """The process containers fork from, started on first use; one per LocalFunctions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._closed = False

    def start(self) -> None:
        """Start it now (its imports then overlap whatever the caller does next); idempotent."""
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> socket.socket:
        if self._closed:
            raise RuntimeError("the containers of this LocalFunctions were closed")
        if self._socket is not None:
            return self._socket
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        environment = {
            **os.environ,
            # The container's imports resolve as this process's do (the checkout, a test's own folders).
            "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry),
            "PYTHONIOENCODING": "utf-8",  # Lambda's stdout is UTF-8 whatever the machine's locale
        }
        try:
            start = f"from billing.local.containers import zygote_main; zygote_main({theirs.fileno()})"
            self._process = subprocess.Popen(  # noqa: S603 - this interpreter, our own module
                [sys.executable, "-c", start],
                pass_fds=(theirs.fileno(),),
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # A terminal's Ctrl-C goes to the stack, which then closes the containers; not to them directly.
                start_new_session=True,
            )
        finally:
            theirs.close()
        self._socket = ours
        # A LocalFunctions nobody closed still stops its zygote, when collected or when the interpreter exits.
        weakref.finalize(self, _stop_zygote, ours, self._process)
        return ours

    def fork(self, spec: Mapping[str, Any], control: socket.socket) -> int:
        """A new container for `spec`, talking over `control` (the child's end of its socket pair); its pid."""
        with self._lock:
            sock = self._start_locked()
            socket.send_fds(sock, [_encode(spec)], [control.fileno()])
            reply = sock.recv(_ZYGOTE_MESSAGE_BYTES)
        if not reply:
            raise FunctionError(_EXIT_ERROR, "the zygote the local containers fork from has exited")
        pid: int = json.loads(reply)["pid"]
        return pid

    def close(self) -> None:
        """Stop the zygote (its containers stop when their own sockets close)."""
        with self._lock:
            self._closed = True
            sock, process = self._socket, self._process
            self._socket = self._process = None
        if sock is not None and process is not None:
            _stop_zygote(sock, process)


def _stop_zygote(sock: socket.socket, process: subprocess.Popen[bytes]) -> None:
    sock.close()  # the zygote exits when it sees its socket closed
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ProcessContainer:
    """One container: a process running one function's handler, one invocation at a time."""

    def __init__(self, control: socket.socket, pid: int) -> None:
        self._control = control
        self.pid = pid
        self.alive = True

    @classmethod
    def start(cls, zygote: Zygote, path: Path, module_name: str, environment: Mapping[str, str]) -> ProcessContainer:
        """Fork a container, import the handler at `path` in it under `environment`; its init log is written out."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            spec = {"path": str(path), "module": module_name, "environment": dict(environment)}
            pid = zygote.fork(spec, theirs)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        container = cls(ours, pid)
        try:
            ready = container._reply()
        except BaseException:
            container.close()
            raise
        if "not_deployed" in ready:
            container.close()
            raise FunctionNotDeployed(ready["not_deployed"])
        if "error" in ready:
            container.close()
            error = ready["error"]
            raise FunctionError(error["errorType"], error["errorMessage"], error["stackTrace"])
        return container

    def invoke(self, event: Any, invocation: Invocation) -> Any:
        """Run the handler on `event` in the container; its result, or FunctionError with what it raised."""
        message = {
            "event": event,
            "function_name": invocation.function_name,
            "region": invocation.region,
            "account_id": invocation.account_id,
            "memory_mb": invocation.memory_mb,
            "timeout_seconds": invocation.timeout_seconds,
            "request_id": invocation.request_id,
            "trace_id": invocation.trace_id,
        }
        try:
            _send(self._control, _encode(message))
        except OSError as exc:
            self.alive = False
            raise FunctionError(_EXIT_ERROR, f"container {self.pid} is gone: {exc}") from None
        reply = self._reply()
        if "error" in reply:
            error = reply["error"]
            raise FunctionError(error["errorType"], error["errorMessage"], error["stackTrace"])
        return reply["result"]

    def _reply(self) -> dict[str, Any]:
        try:
            reply = _receive(self._control)
        except OSError:
            reply = None
        if reply is None:
            self.alive = False
            raise FunctionError(_EXIT_ERROR, f"container {self.pid} exited before it answered")
        write_function_output(reply.pop("output", ""))
        answer: dict[str, Any] = reply
        return answer

    def close(self) -> None:
        """Let the container go: it exits when it sees its socket closed; an invocation waiting on it fails."""
        self.alive = False
        # Wakes a thread blocked reading it (close alone would not) and ends the container's read loop; a socket
        # already closed has nothing to wake.
        with contextlib.suppress(OSError):
            self._control.shutdown(socket.SHUT_RDWR)
        self._control.close()


# --- the zygote's and the containers' side ----------------------------------------------------------------------


def zygote_main(fd: int) -> None:
    """Import the preloaded modules, then fork a container for every spec received on socket `fd` until it closes."""
    sock = socket.socket(fileno=fd)
    for name in PRELOADED_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue  # a slimmer environment: that container imports what it needs itself
    # Containers are never waited for: the kernel reaps them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, _ZYGOTE_MESSAGE_BYTES, 1)
        except OSError:
            break
        if not message or not fds:
            break
        pid = os.fork()
        if pid == 0:
            try:
                sock.close()
                _container_main(socket.socket(fileno=fds[0]), json.loads(message))
            finally:
                os._exit(1)
        os.close(fds[0])
        sock.send(json.dumps({"pid": pid}).encode())
    os._exit(0)


class _CapturedOutput:
    """This process's stdout and stderr (file descriptors 1 and 2) into one unnamed file, read back and emptied
    after each invocation: a container's log, in the order it was written."""

    def __init__(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the container
        os.dup2(self._file.fileno(), 1)
        os.dup2(self._file.fileno(), 2)

    def take(self) -> str:
        sys.stdout.flush()
        sys.stderr.flush()
        fd = self._file.fileno()
        size = os.lseek(fd, 0, os.SEEK_END)
        data = bytearray()
        while len(data) < size:
            chunk = os.pread(fd, size - len(data), len(data))
            if not chunk:
                break
            data += chunk
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        return data.decode("utf-8", errors="replace")


def _container_main(control: socket.socket, spec: dict[str, Any]) -> NoReturn:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the function may run subprocesses and wait for them
    # The container's whole environment, as Lambda sets it before init: nothing of the zygote's remains.
    os.environ.clear()
    os.environ.update(spec["environment"])
    output = _CapturedOutput()
    handler: Any = None
    ready: dict[str, Any] = {}
    try:
        from billing.local.lambda_loader import load_module

        handler = getattr(load_module(Path(spec["path"]), spec["module"]), "lambda_handler", None)
        if not callable(handler):
            ready = {"not_deployed": f"{spec['path']} has no lambda_handler"}
    except Exception as exc:  # an import that fails is the function's error (Runtime.ImportModuleError in AWS)
        _log_error(exc)
        ready = {"error": _error_document(exc)}
    try:
        _send(control, _encode({**ready, "output": output.take()}))
        if ready:
            os._exit(0)
        while (message := _receive(control)) is not None:
            answer = _invoke(handler, message)
            # The log is taken after the answer is encoded, so a result that does not marshal is in it too.
            _send(control, answer[:-1] + b',"output":' + json.dumps(output.take()).encode() + b"}")
    except OSError:
        pass  # the stack went away mid-answer
    os._exit(0)


def _invoke(handler: Any, message: dict[str, Any]) -> bytes:
    """The answer to one invocation, encoded: {"result": ...} or {"error": {errorType, errorMessage, stackTrace}}."""
    invocation = Invocation(
        message["function_name"],
        message["region"],
        message["account_id"],
        message["memory_mb"],
        message["timeout_seconds"],
        message["request_id"],
        message["trace_id"],
    )
    os.environ[TRACE_ID_VARIABLE] = invocation.trace_id
    try:
        result = handler(message["event"], invocation.context())
    except Exception as exc:  # the function's error, reported to its caller and logged as the runtime does
        _log_error(exc)
        return _encode({"error": _error_document(exc)})
    try:
        return _encode({"result": result})
    except (TypeError, ValueError) as exc:
        error = FunctionError(_MARSHAL_ERROR, f"Unable to marshal response: {exc}")
        _log_error(error)
        return _encode({"error": {"errorType": _MARSHAL_ERROR, "errorMessage": str(error), "stackTrace": []}})


def _log_error(error: BaseException) -> None:
    # The Python runtime's line for an uncaught error: "[ERROR] <type>: <message>" and the traceback.
    name = error.error_type if isinstance(error, FunctionError) else type(error).__name__
    print(f"[ERROR] {name}: {error}", file=sys.stderr)
    traceback.print_exception(error, file=sys.stderr)
