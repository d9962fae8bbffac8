"""The application's tables, as the tests use them."""

from sqlalchemy import FetchedValue, Integer, Text
from sqlalchemy.dialects.postgresql import CITEXT
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(CITEXT)
    token: Mapped[str] = mapped_column(Text, server_default=FetchedValue())
