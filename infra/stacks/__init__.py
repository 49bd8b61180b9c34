"""The three stacks of a stage, deployed in order: network, data, service."""
