"""Alembic environment. chatmedia runs migrations itself (chatmedia.db.migrate) on its own
async connection, handed over in `config.attributes["connection"]`."""

from alembic import context

from chatmedia.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `chatmedia migrate`")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
