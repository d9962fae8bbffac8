DROP TRIGGER books_touch ON books;
DROP FUNCTION touch_updated_at();
ALTER TABLE books DROP COLUMN updated_at;
