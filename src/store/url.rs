//! Choosing a backend by URL: `sqlite://PATH` (or a bare path), `postgres://...` and `memory:`.

use std::path::PathBuf;
use std::sync::Arc;

#[cfg(feature = "postgres")]
use super::PostgresStore;
#[cfg(feature = "sqlite")]
use super::{Durability, SqliteStore};
use super::{MemoryStore, Store, StoreError};

/// Where sessions live, as written in a host's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite://PATH` (`sqlite:///abs/path` or `sqlite://relative/path`) or a bare path.
    Sqlite(PathBuf),
    /// `postgres://` or `postgresql://`, as libpq and tokio-postgres read it.
    Postgres(String),
    /// `memory:`: a [`MemoryStore`], new at each open; sessions end with the process.
    Memory,
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl { url: url.to_owned(), reason: reason.to_owned() };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        if url == "memory:" || url == "memory://" {
            return Ok(Self::Memory);
        }
        let path = match url.split_once("://") {
            Some(("sqlite", path)) => path,
            Some((scheme, _)) => {
                return Err(invalid(&format!(
                    "unknown scheme `{scheme}`; use sqlite://PATH, postgres://... or memory:"
                )));
            }
            None => url,
        };
        if path.is_empty() {
            return Err(invalid("the SQLite path is empty"));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => f.write_str(&redact_password(url)),
            Self::Memory => f.write_str("memory:"),
        }
    }
}

/// `url` with its password (if any) replaced, for logs and errors.
pub(crate) fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = rest.split_once('/').map_or((rest, None), |(a, t)| (a, Some(t)));
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    let shown = if user.len() == userinfo.len() { userinfo.to_owned() } else { format!("{user}:***") };
    match tail {
        Some(tail) => format!("{scheme}://{shown}@{host}/{tail}"),
        None => format!("{scheme}://{shown}@{host}"),
    }
}

impl StoreUrl {
    /// Opens (and migrates) the store. SQLite commits with `synchronous=FULL`. A backend this
    /// build left out (cargo features `sqlite`, `postgres`) is an [`StoreError::InvalidUrl`].
    pub async fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(path) => Arc::new(SqliteStore::open(path, Durability::Full)?),
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => Arc::new(PostgresStore::connect(url).await?),
            Self::Memory => Arc::new(MemoryStore::new()),
            #[allow(unreachable_patterns)]
            other => return Err(self.left_out(other)),
        })
    }

    #[cfg_attr(all(feature = "sqlite", feature = "postgres"), allow(dead_code))]
    fn left_out(&self, url: &StoreUrl) -> StoreError {
        let feature = if matches!(url, Self::Postgres(_)) { "postgres" } else { "sqlite" };
        StoreError::InvalidUrl {
            url: url.to_string(),
            reason: format!("this toolhost was built without its `{feature}` feature"),
        }
    }
}

/// Opens the store `url` names: `sqlite://PATH`, a bare path (SQLite), `postgres://...`, or
/// `memory:` (a new, empty [`MemoryStore`]).
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    url.parse::<StoreUrl>()?.open().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_the_backend() {
        assert_eq!("sqlite://db/s.db".parse::<StoreUrl>().unwrap(), StoreUrl::Sqlite("db/s.db".into()));
        assert_eq!("sqlite:///tmp/s.db".parse::<StoreUrl>().unwrap(), StoreUrl::Sqlite("/tmp/s.db".into()));
        assert_eq!("s.db".parse::<StoreUrl>().unwrap(), StoreUrl::Sqlite("s.db".into()));
        let pg = "postgres://u:secret@127.0.0.1:5432/db";
        assert_eq!(pg.parse::<StoreUrl>().unwrap(), StoreUrl::Postgres(pg.into()));
        assert_eq!(StoreUrl::Postgres(pg.into()).to_string(), "postgres://u:***@127.0.0.1:5432/db");
        assert_eq!("memory:".parse::<StoreUrl>().unwrap(), StoreUrl::Memory);
        assert_eq!(StoreUrl::Memory.to_string(), "memory:");
        assert!(matches!("mysql://x".parse::<StoreUrl>(), Err(StoreError::InvalidUrl { .. })));
        assert!(matches!("sqlite://".parse::<StoreUrl>(), Err(StoreError::InvalidUrl { .. })));
    }
}
