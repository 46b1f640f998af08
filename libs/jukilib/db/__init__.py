"""PostgreSQL access: the connection pool, migrations, role bootstrap and the embedded server."""
