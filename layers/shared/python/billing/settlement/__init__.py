"""Settlement reconciliation: provider settlement files checked against the executions we recorded.

Pure modules (files, period, matching, report) import no psycopg, boto3 or Powertools; the service, the SQL in
billing.db.settlement_queries and the S3 adapter do the I/O. See docs/settlement.md.
"""
