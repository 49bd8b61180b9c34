"""Payment rails and providers: result values (pure), the provider and rail ports, rail adapters, the sandbox."""
