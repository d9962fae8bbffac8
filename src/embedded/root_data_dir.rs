//! Moving a data directory left in root's home to the root default, where `PostgreSQL`'s account
//! can reach it.

use std::path::Path;

use super::{ServerError, io_error};

/// As root, the data directory's default is [`ROOT_DATA_DIR`](crate::config::ROOT_DATA_DIR)
/// (the server's account cannot enter root's home). A cluster left at the default in root's
/// home (`~/.local/share/pgharness`) is moved there once, whole, when that is still empty.
///
/// # Errors
///
/// [`ServerError::Io`] when the move fails; nothing is lost (a rename moves all or nothing).
pub fn adopt_data_dir_from_roots_home(data_dir: &Path) -> Result<(), ServerError> {
    if !crate::platform::privilege::is_root()
        || data_dir != Path::new(crate::config::ROOT_DATA_DIR)
        || data_dir.join("pgdata").exists()
    {
        return Ok(());
    }
    let Some(previous) = dirs::data_dir().map(|dir| dir.join("pgharness")) else {
        return Ok(());
    };
    if !previous.join("pgdata/PG_VERSION").exists() {
        return Ok(());
    }
    if let Some(parent) = data_dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|source| io_error("cannot create", parent, source))?;
    }
    // An empty directory left by an earlier start is replaced; anything else stays.
    let _ = std::fs::remove_dir(data_dir);
    std::fs::rename(&previous, data_dir).map_err(|source| {
        io_error(
            "cannot move the data directory from root's home to",
            data_dir,
            source,
        )
    })?;
    tracing::info!(
        from = %previous.display(),
        to = %data_dir.display(),
        "moved the data directory out of root's home, where PostgreSQL's account cannot reach it"
    );
    Ok(())
}
