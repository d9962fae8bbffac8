"""Each test gets a database of its own, migrated once per run, from `pgharness testdb serve`
(IntegreSQL's API; the client reads INTEGRESQL_CLIENT_BASE_URL, which `pgharness testdb run`
sets)."""

import pathlib
import sys

# The client's template hash covers every file in the migrations folder, bytecode included:
# without this, the first worker's Alembic run would change the hash the others compute.
sys.dont_write_bytecode = True

import pytest  # noqa: E402
from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from integresql_client_python import IntegreSQL  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

HERE = pathlib.Path(__file__).parent
MIGRATIONS = HERE / "migrations"


def url_of(dbinfo) -> str:
    return (
        f"postgresql+psycopg2://{dbinfo.user}:{dbinfo.password}"
        f"@{dbinfo.host}:{dbinfo.port}/{dbinfo.name}"
    )


@pytest.fixture(scope="session")
def template():
    """The migrated template: the first xdist worker migrates it, the others wait for it."""
    with IntegreSQL(MIGRATIONS) as tpl:
        with tpl.initialize() as dbinfo:
            # None for every worker but the one that initializes the template.
            if dbinfo:
                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS))
                config.set_main_option("sqlalchemy.url", url_of(dbinfo))
                command.upgrade(config, "head")
        yield tpl


@pytest.fixture
def database_url(template) -> str:
    """A fresh clone of the template, for this test alone."""
    return url_of(template.get_database().open())


@pytest.fixture
def session(database_url):
    engine = create_engine(database_url, poolclass=NullPool)
    with Session(engine) as session:
        yield session
    engine.dispose()
