"""Provider webhooks, the pure half: raw deliveries, signature schemes, secrets and payload parsers.

Order of work is fixed by the API: take the body bytes exactly as received, verify, and only then parse.
"""
