"""make token: print a bearer token for the local stack, signed with the public dev key (docs/local.md).

Prints the token and nothing else, so scripts can use it as `TOKEN=$(make -s token TENANT=<uuid>)`.
`make token SCOPE=auditor` adds scopes (space-separated, e.g. SCOPE="auditor billing:read") for the audit API.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from uuid import UUID

# Long enough for a working day of curl calls; it is only ever accepted by a local stack.
DEFAULT_TTL_MINUTES = 12 * 60


def _tenant(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID") from None


def main(argv: list[str] | None = None) -> int:
    # Imported here, not at the top: see the stand-in above, this file must stay cheap to import as `token`.
    from billing.auth.tokens import DEMO_SUBJECT, DEMO_TENANT_ID, LOCAL_TOKEN_SETTINGS, issue_token

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--tenant",
        type=_tenant,
        default=DEMO_TENANT_ID,
        help=f"tenant UUID (default: the demo tenant {DEMO_TENANT_ID})",
    )
    parser.add_argument("--sub", default=DEMO_SUBJECT, help=f"subject, the acting user (default: {DEMO_SUBJECT})")
    parser.add_argument("--scope", default="", help='space-separated scopes, e.g. "auditor" (default: none)')
    parser.add_argument("--ttl-minutes", type=int, default=DEFAULT_TTL_MINUTES, help="lifetime (default: 12 hours)")
    args = parser.parse_args(argv)
    if args.ttl_minutes <= 0:
        parser.error("--ttl-minutes must be positive")
    try:
        token = issue_token(
            LOCAL_TOKEN_SETTINGS,
            args.tenant,
            args.sub,
            ttl=timedelta(minutes=args.ttl_minutes),
            scopes=args.scope.split(),
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
