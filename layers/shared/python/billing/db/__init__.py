"""PostgreSQL adapters: connections, migrations, the execution repository and the workflow writer."""
