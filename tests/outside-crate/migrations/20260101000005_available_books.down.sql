DROP VIEW available_books;
