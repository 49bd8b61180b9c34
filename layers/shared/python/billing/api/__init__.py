"""HTTP adapter: request context, resources and the one mapping from domain errors to problem+json."""
