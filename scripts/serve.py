"""make serve: the whole system locally (PostgreSQL, moto, the API on 127.0.0.1:8080) until Ctrl-C.

PORT picks another port (0: any free one), DATABASE_URL another PostgreSQL, MOTO_PORT a fixed port for moto.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from types import FrameType

from billing.local.stack import ENV_PORT, LocalStack, configure_logging


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)  # unwinds through LocalStack.__exit__, so everything stops cleanly


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    configure_logging()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        stack = LocalStack()
    except ValueError as exc:  # a PORT or MOTO_PORT that is not a port number
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with stack:
            stack.start_background_jobs()
            print(f"billing API ready on {stack.base_url}", flush=True)
            print(
                f"  Stripe API (localstripe unless STRIPE_API_BASE is set) on {stack.stripe_api_base}; its signed "
                "webhooks go to /api/v1/billing/webhook/stripe",
                flush=True,
            )
            print(
                '  get a token: TOKEN=$(make -s token TENANT=<uuid>), then curl -H "Authorization: Bearer $TOKEN" '
                f"{stack.base_url}/api/v1/billing/executions",
                flush=True,
            )
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"error: port {stack.port} is already in use; set {ENV_PORT}=<another port>", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
