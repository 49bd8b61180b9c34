"""localstripe (a stateful Stripe emulator) as a subprocess on a free loopback port, for tests, benches and demos.

    with start_localstripe() as server:
        provider = StripeProvider(..., api_base=server.api_base, profile=LOCALSTRIPE)
        server.register_webhook("http://127.0.0.1:8000/webhooks/stripe", "whsec_test")

Why not `localstripe --port N --from-scratch` as it is: localstripe pickles its whole store after every write to
the hard-coded path /tmp/localstripe.pickle (Store.dump_to_disk in localstripe/resources.py, called by
server.save_store_middleware and by every Store.__setitem__). The path derives from no working directory, HOME or
TMPDIR, so parallel instances (pytest-xdist workers, a bench beside a test run) would all truncate and rewrite one
file, and one started without --from-scratch would load another's store. It also binds every interface ('::')
on a port the caller must find free beforehand, racing other processes for it. So this module doubles as the
child's entry point (`python -m billing.local.localstripe`): it runs localstripe's own aiohttp app with the dump
redirected into the instance's private temporary directory, the store starting empty (what --from-scratch does),
and its socket bound by itself to 127.0.0.1 port 0, reporting the port through a file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

_HOST: Final = "127.0.0.1"
# localstripe accepts any secret key that starts with sk_; this one only asks whether it is up.
_PROBE_KEY: Final = "sk_test_localstripe_probe"
DEFAULT_STARTUP_TIMEOUT: Final = 30.0
_POLL_INTERVAL: Final = 0.05
# This module, run as the child process (see _serve).
_CHILD_MODULE: Final = "billing.local.localstripe"


class LocalStripeError(RuntimeError):
    """localstripe did not start, or refused a configuration request."""


class LocalStripe:
    """A running localstripe. Use as a context manager, or call stop()."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
        self._process = process
        self._workdir = workdir
        self.port = port
        self.api_base = f"http://{_HOST}:{port}"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def log_path(self) -> Path:
        """localstripe's output (one access-log line per request): where to look when a test fails."""
        return self._workdir / "localstripe.log"

    def register_webhook(self, url: str, secret: str, events: Sequence[str] | None = None) -> None:
        """Have localstripe POST signed events to `url` (all event types, or only `events`).

        localstripe's `POST /_config/webhooks/<id>` takes form fields url, secret and events (a list, sent as
        events[]); one endpoint per id, so registering the same url again replaces it.
        """
        fields: list[tuple[str, str]] = [("url", url), ("secret", secret)]
        fields += [("events[]", event) for event in events or ()]
        webhook_id = urllib.parse.quote(url, safe="")
        request = urllib.request.Request(  # noqa: S310 - our own loopback server
            f"{self.api_base}/_config/webhooks/{webhook_id}",
            data=urllib.parse.urlencode(fields).encode(),
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            # The body names no secret: localstripe answers "Bad request".
            raise LocalStripeError(f"localstripe refused the webhook for {url}: HTTP {exc.code}") from None

    def stop(self) -> None:
        """Stop the server and remove its directory (store dump and log). Safe to call twice."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._workdir, ignore_errors=True)


def start_localstripe(*, startup_timeout: float = DEFAULT_STARTUP_TIMEOUT) -> LocalStripe:
    """Start a fresh, empty localstripe and return once it answers API requests."""
    workdir = Path(tempfile.mkdtemp(prefix="localstripe-"))
    port_file = workdir / "port"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_package_root(), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", _CHILD_MODULE, "--workdir", str(workdir), "--port-file", str(port_file)]
    with (workdir / "localstripe.log").open("wb") as log:
        # Our own interpreter running this module: no input from outside reaches the command line.
        process = subprocess.Popen(  # noqa: S603
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env
        )
    try:
        port = _wait_for_port(process, port_file, time.monotonic() + startup_timeout)
        server = LocalStripe(process, port, workdir)
        _wait_until_answering(process, server, time.monotonic() + startup_timeout)
    except BaseException:
        process.kill()
        process.wait()
        output = (workdir / "localstripe.log").read_text(errors="replace")[-2000:]
        shutil.rmtree(workdir, ignore_errors=True)
        if output:
            sys.stderr.write(f"localstripe output:\n{output}\n")
        raise
    return server


def _package_root() -> str:
    # billing/local/localstripe.py -> the directory holding the billing package.
    return str(Path(__file__).resolve().parents[2])


def _wait_for_port(process: subprocess.Popen[bytes], port_file: Path, deadline: float) -> int:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalStripeError(f"localstripe exited with status {process.returncode} before listening")
        try:
            return int(port_file.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(_POLL_INTERVAL)
    raise LocalStripeError("localstripe did not report its port in time")


def _wait_until_answering(process: subprocess.Popen[bytes], server: LocalStripe, deadline: float) -> None:
    probe = urllib.request.Request(  # noqa: S310 - our own loopback server
        f"{server.api_base}/v1/payment_intents?limit=1", headers={"Authorization": f"Bearer {_PROBE_KEY}"}
    )
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalStripeError(f"localstripe exited with status {process.returncode} while starting")
        try:
            with urllib.request.urlopen(probe, timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(_POLL_INTERVAL)
    raise LocalStripeError("localstripe did not answer in time")


def _serve(argv: Sequence[str] | None = None) -> None:
    """The child: localstripe's app, its store dumped into --workdir, listening on a loopback port of its own."""
    import logging
    import pickle
    import socket

    from aiohttp import web
    from localstripe import resources, server  # type: ignore[import-untyped]

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--port-file", required=True, type=Path)
    args = parser.parse_args(argv)
    store_path = args.workdir / "localstripe.pickle"

    def dump_to_disk(store: object) -> None:
        # localstripe's own dump, to this instance's file; nothing ever loads it back (the store starts empty).
        with store_path.open("wb") as dump:
            pickle.dump(store, dump, protocol=pickle.HIGHEST_PROTOCOL)

    resources.Store.dump_to_disk = dump_to_disk
    # One line per request (method, path, status; never a body) and per webhook delivery, into the log file.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((_HOST, 0))
    sock.listen(128)
    # Written whole, then renamed: the parent never reads half a number.
    partial = args.port_file.with_suffix(".partial")
    partial.write_text(str(sock.getsockname()[1]))
    partial.replace(args.port_file)
    web.run_app(server.app, sock=sock, print=None, access_log_format='%a "%r" %s %b %Tf')


if __name__ == "__main__":
    _serve()
