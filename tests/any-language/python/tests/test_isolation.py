"""Every test writes to its own database and sees only its own rows, however many run at once."""

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import ProgrammingError

from models import Note

WRITERS = [f"writer-{number:02}" for number in range(12)]


@pytest.mark.parametrize("writer", WRITERS)
def test_each_test_sees_only_its_own_rows(session, writer):
    rows = 3 + WRITERS.index(writer)
    session.add_all(Note(owner=writer, body=f"note {n}") for n in range(rows))
    session.commit()
    owners = session.scalars(select(Note.owner).distinct()).all()
    assert owners == [writer]
    assert session.scalar(select(func.count()).select_from(Note)) == rows
    # A fresh clone: the sequence starts at 1, untouched by any other test.
    assert session.scalar(select(func.min(Note.id))) == 1


def test_trusted_extensions_from_the_migrations_work(session):
    session.add(Note(owner="ext", body="Hello"))
    session.commit()
    note = session.scalars(select(Note).where(Note.body == "HELLO")).one()
    assert len(note.token) == 36
    digest = session.scalar(text("SELECT encode(digest('x', 'sha1'), 'hex')"))
    assert digest == "11f6ad8ec52a2984abaafd7c3b516503785c2072"


def test_the_tests_role_cannot_run_programs_on_the_server(session):
    with pytest.raises(ProgrammingError, match="permission denied"):
        session.execute(text("COPY notes TO PROGRAM 'true'"))

