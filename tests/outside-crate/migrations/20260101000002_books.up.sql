CREATE TABLE books (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    author_id bigint NOT NULL REFERENCES authors (id),
    title text NOT NULL,
    isbn text NOT NULL CONSTRAINT books_isbn_key UNIQUE,
    copies integer NOT NULL DEFAULT 1 CONSTRAINT books_copies_positive CHECK (copies > 0)
);
