"""Each test gets a database of its own, migrated once per run, from `pgharness testdb serve`
(IntegreSQL's API; the client reads INTEGRESQL_CLIENT_BASE_URL, which `pgharness testdb run`
sets).

With PGHARNESS_BENCH_PER_TEST_MIGRATIONS=1 (bench.sh), each test instead creates its own database
on the same server and runs `alembic upgrade head` on it, as a suite without a template tool
does; the tests are the same."""

import itertools
import json
import os
import pathlib
import secrets
import sys

# The client's template hash covers every file in the migrations folder, bytecode included:
# without this, the first worker's Alembic run would change the hash the others compute.
sys.dont_write_bytecode = True

import pytest  # noqa: E402
from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from integresql_client_python import IntegreSQL  # noqa: E402
from sqlalchemy import URL, create_engine, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

HERE = pathlib.Path(__file__).parent
MIGRATIONS = HERE / "migrations"
PER_TEST_MIGRATIONS = os.environ.get("PGHARNESS_BENCH_PER_TEST_MIGRATIONS") == "1"


def url_of(dbinfo) -> str:
    return (
        f"postgresql+psycopg2://{dbinfo.user}:{dbinfo.password}"
        f"@{dbinfo.host}:{dbinfo.port}/{dbinfo.name}"
    )


def migrate(url: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "head")


@pytest.fixture(scope="session")
def template():
    """The migrated template: the first xdist worker migrates it, the others wait for it."""
    with IntegreSQL(MIGRATIONS) as tpl:
        with tpl.initialize() as dbinfo:
            # None for every worker but the one that initializes the template.
            if dbinfo:
                migrate(url_of(dbinfo))
        yield tpl


def superuser_url() -> URL:
    """The superuser of the shared test server `pgharness testdb run` holds, from its run
    directory's state.json (readable by the account running the tests)."""
    run_dir = os.environ.get("PGHARNESS_TEST_DIR")
    if not run_dir:
        raise RuntimeError(
            "PGHARNESS_BENCH_PER_TEST_MIGRATIONS=1 needs the shared test server's run directory "
            "(PGHARNESS_TEST_DIR), which `pgharness testdb run` sets: run pytest under it"
        )
    state = json.loads((pathlib.Path(run_dir) / "state.json").read_text())
    return URL.create(
        "postgresql+psycopg2",
        username="postgres",
        password=state["password"],
        host="127.0.0.1",
        port=state["port"],
        database="postgres",
    )


@pytest.fixture(scope="session")
def owner():
    """A login role of this worker's own, owning the databases its tests create: the tests run
    as an application's role, not as the superuser."""
    admin = create_engine(superuser_url(), isolation_level="AUTOCOMMIT")
    name = f"pgh_bench_{os.getpid()}"
    password = secrets.token_hex(16)
    with admin.connect() as connection:
        # One SCRAM round, as for the roles `pgharness testdb serve` makes: both modes pay the
        # same for authentication.
        connection.execute(text("SET scram_iterations = 1"))
        connection.execute(text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'"))
    yield admin, name, password, itertools.count()
    with admin.connect() as connection:
        connection.execute(text(f"DROP ROLE {name}"))
    admin.dispose()


if PER_TEST_MIGRATIONS:

    @pytest.fixture
    def database_url(owner):
        """A new database, migrated for this test alone, dropped after it."""
        admin, role, password, numbers = owner
        database = f"{role}_{next(numbers)}"
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {database} OWNER {role}"))
        url = admin.url.set(username=role, password=password, database=database)
        url = url.render_as_string(hide_password=False)
        migrate(url)
        yield url
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {database} WITH (FORCE)"))

else:

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
