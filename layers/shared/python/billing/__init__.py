"""Billing execution engine: the shared package every Lambda function imports (the Lambda layer)."""
