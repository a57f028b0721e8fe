"""Alembic environment: run against the connection that ``Database.migrate`` passes in."""

from alembic import context

from openi2v.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
