//! What differs between Linux, macOS and Windows, each behind one small module, so that the
//! rest of the crate is written once:
//! - [`privilege`]: who `PostgreSQL` runs as (it refuses to run as root);
//! - [`process`]: whether a process is alive, and starting one that outlives its parent;
//! - [`files`]: files and directories only their owner may read;
//! - [`signals`]: what asks a running server to shut down;
//! - [`limits`]: how many connections a server can hold open;
//! - [`random`]: passwords from the operating system's random source.
//!
//! Everything else is portable as written: file locks are std's `File::lock`/`try_lock`,
//! directories come from `dirs`, executables are named with `std::env::consts::EXE_SUFFIX`.

pub mod files;
#[cfg(feature = "server")]
pub mod limits;
pub mod privilege;
pub mod process;
pub mod random;
#[cfg(feature = "server")]
pub mod signals;
