"""The billing engine's AWS CDK app: network, data and service stacks for one stage (dev or prod)."""
