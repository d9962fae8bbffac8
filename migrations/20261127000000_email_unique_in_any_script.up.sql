-- One case rule for e-mail addresses, the database's, in every script: ICU's Unicode case
-- mapping makes 'ÖX@x.y' and 'öx@x.y' one address (the C locale's lower() folds ASCII only).
-- Single and batch writes both check against this index.
DROP INDEX users_email_key;
CREATE UNIQUE INDEX users_email_key ON users (lower(email COLLATE "und-x-icu"));
