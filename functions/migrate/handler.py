"""Applies the sql/ migrations bundled with this function through RDS Proxy; run by the deploy-time trigger.

It connects as the cluster admin (its DATABASE_SECRET_ARN) and sets every login user's password from that user's own
secret, so the database holds exactly what RDS Proxy and the functions will present.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import psycopg
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from billing import resource_names as names
from billing.aws.cold_start import lazy_module, preload
from billing.db.connection import Connection, connect, session_options
from billing.db.connection_provider import database_url_from_environment
from billing.db.migrations import apply_migrations, discover
from billing.db.roles import LOGIN_USERS, DatabaseRole

# Powertools' parameters bring boto3: loaded by the first secret read, not at import.
if TYPE_CHECKING:
    from aws_lambda_powertools.utilities import parameters
else:
    parameters = lazy_module("aws_lambda_powertools.utilities.parameters")

logger = Logger()

# Read at cold start: without it billing.paths would look for sql/ beside the layer and find nothing to apply.
MIGRATIONS_DIR: Final = Path(os.environ[names.ENV_MIGRATIONS_DIR])
# On a stage's first deploy RDS Proxy may still be registering its target when this runs: keep trying for a while.
CONNECT_RETRY_SECONDS: Final = 10
# Stop retrying early enough to apply the migrations (and report) within the function's timeout.
RESERVED_FOR_MIGRATIONS_MS: Final = 120_000


def _login_secret_arns(raw: str) -> Mapping[DatabaseRole, str]:
    """{group role: secret ARN} of every login user; a user without one would keep its published dev password."""
    arns = {DatabaseRole(role): arn for role, arn in json.loads(raw).items()}
    if set(arns) != set(LOGIN_USERS):
        raise RuntimeError(f"{names.ENV_DATABASE_LOGIN_SECRET_ARNS} must name exactly {sorted(LOGIN_USERS)}")
    return arns


LOGIN_SECRET_ARNS: Final = _login_secret_arns(os.environ[names.ENV_DATABASE_LOGIN_SECRET_ARNS])


def _login_passwords() -> dict[DatabaseRole, str]:
    """Each login user's current password, read from its own secret."""
    passwords: dict[DatabaseRole, str] = {}
    for role, arn in LOGIN_SECRET_ARNS.items():
        # Never cached: a warm container must not write back a password rotated since it last looked. Rotation
        # changes the password in the database and then the secret; this always writes the secret's current value.
        secret: dict[str, Any] = parameters.get_secret(arn, transform="json", force_fetch=True)
        if secret["username"] != LOGIN_USERS[role].name:
            raise RuntimeError(f"the {role} secret is {secret['username']}'s, not {LOGIN_USERS[role].name}'s")
        passwords[role] = secret["password"]
    return passwords


def _connect(context: LambdaContext) -> Connection:
    # Migrations may scan whole tables (backfills): no statement timeout, but never wait forever on a lock.
    options = session_options(statement_timeout_ms=0, lock_timeout_ms=30_000)
    while True:
        try:
            return connect(database_url_from_environment(), application_name="billing-migrations", options=options)
        except psycopg.OperationalError as error:
            if context.get_remaining_time_in_millis() < RESERVED_FOR_MIGRATIONS_MS:
                raise
            logger.warning("database not reachable yet, retrying", extra={"error": str(error)})
            time.sleep(CONNECT_RETRY_SECONDS)


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, list[str]]:
    migrations = discover(MIGRATIONS_DIR)
    if not migrations:
        raise RuntimeError(f"no migrations in {MIGRATIONS_DIR}: the function was deployed without sql/")
    passwords = _login_passwords()
    with _connect(context) as conn:
        applied = apply_migrations(conn, migrations, passwords=passwords)
    logger.info("migrations applied", extra={"applied": applied, "available": len(migrations)})
    return {"applied": applied}


preload(parameters)
