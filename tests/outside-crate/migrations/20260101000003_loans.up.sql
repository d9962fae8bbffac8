CREATE TABLE loans (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    book_id bigint NOT NULL REFERENCES books (id),
    reader text NOT NULL,
    lent_at timestamptz NOT NULL DEFAULT now(),
    returned_at timestamptz
);
-- A book is lent to one reader at a time.
CREATE UNIQUE INDEX loans_one_open_per_book ON loans (book_id) WHERE returned_at IS NULL;
