"""Alembic's environment: the URL comes from the caller (conftest.py, or alembic.ini)."""

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

url = context.config.get_main_option("sqlalchemy.url")
# NullPool: the connection is closed when the migration ends, so the template can be cloned.
engine = create_engine(url, poolclass=NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
