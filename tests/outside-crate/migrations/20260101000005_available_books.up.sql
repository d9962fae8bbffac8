CREATE VIEW available_books AS
SELECT b.id, b.title, a.name AS author
  FROM books b JOIN authors a ON a.id = b.author_id
 WHERE NOT EXISTS (SELECT 1 FROM loans l WHERE l.book_id = b.id AND l.returned_at IS NULL);
