-- Usernames that look alike are one name: compatibility forms (fullwidth 'ｂｏｂ', the
-- ligature 'ﬁ') are folded by NFKC, and case by ICU's Unicode case mapping, so 'Bob', 'BOB'
-- and 'ｂｏｂ' cannot all be registered. Single, batch and PATCH writes all meet this index.
ALTER TABLE users DROP CONSTRAINT users_username_key;
CREATE UNIQUE INDEX users_username_key ON users (lower(normalize(username, NFKC) COLLATE "und-x-icu"));
