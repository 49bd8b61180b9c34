"""Pure domain: money, statuses and transitions, workflow vocabulary, errors. Imports no I/O libraries."""
