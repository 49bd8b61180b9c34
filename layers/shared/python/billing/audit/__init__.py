"""The PCI DSS audit trail: an append-only log of audited events, kept as one RFC 6962 Merkle tree.

Callers record events with `record_audit_event(conn, AuditEvent(...))`. The rest of the package sequences entries
into the tree (sequencer), signs checkpoints of it (checkpoints, keys, s3), answers auditors (queries) and checks
everything again from the stored rows (verify, `python -m billing.audit verify`). merkle and leaf are pure.
docs/pci.md, "Audit trail", is the long form.
"""

from billing.audit.events import AuditEvent, AuditEventType, AuditOutcome
from billing.audit.recorder import record_audit_event

__all__ = ["AuditEvent", "AuditEventType", "AuditOutcome", "record_audit_event"]
