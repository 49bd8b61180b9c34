"""Use cases that combine the domain with the repositories and providers."""
