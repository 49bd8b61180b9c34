"""Adapters for AWS services (SQS, EventBridge, S3, Secrets Manager), built on boto3 clients passed in."""
