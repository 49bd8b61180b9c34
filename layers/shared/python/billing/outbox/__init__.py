"""The outbox relay: committed outbox rows to the billing event bus, in order per execution, at least once.

events and chunking are pure; ports holds the publisher Protocol; eventbridge is the boto3 adapter; relay and
replay are the services (see docs/events.md for what consumers receive).
"""
