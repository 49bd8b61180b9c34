"""Local-only helpers (embedded PostgreSQL, dev servers). Never imported by Lambda code paths."""
