//! A tiny library shop: authors, books, loans. Its schema lives in `migrations/`.

use sqlx::PgPool;

/// Lends a book to a reader; refused by the database when the book is already out.
///
/// # Errors
///
/// The database's refusal (unique violation: the book is on loan).
pub async fn lend(pool: &PgPool, book_id: i64, reader: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO loans (book_id, reader) VALUES ($1, $2) RETURNING id")
        .bind(book_id)
        .bind(reader)
        .fetch_one(pool)
        .await
}
