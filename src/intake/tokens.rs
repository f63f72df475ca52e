//! Which hook a bearer token names, remembered between requests: looking it up was a
//! transaction of its own, a quarter of an accepted lead's round trips to PostgreSQL.
//!
//! A remembered hook is never trusted alone. It can only lead to a stored lead, and the
//! transaction that stores the lead first checks that the hook's row is still the version
//! remembered and the token still one of its own ([`confirm`], or the same test,
//! [`unchanged_sql!`], folded into the blocklist query or into the gate of the statement that
//! stores a lead on its own). Any other answer that a remembered hook would give (429, 404, 403,
//! 415, 413, 400) is decided again from the database. So a rotation, a disabled hook or a new
//! rate limit takes effect at the very next request, in every process, with no notification
//! to wait for.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};

use crate::hooks::{self, Hook, TokenHook};

/// How long a token's hook is remembered. Only memory depends on it, not correctness: a
/// token no longer sent is forgotten after this.
const REMEMBER_FOR: Duration = Duration::from_secs(60);

/// Past this many tokens, all are forgotten at once (a hook has one or two live tokens; a
/// flood of distinct valid tokens is not a workload to optimise).
const MAX_REMEMBERED: usize = 10_000;

/// Hooks found by token, keyed by the token's SHA-256 (the token itself is never kept).
#[derive(Default)]
pub struct Tokens {
    known: Mutex<HashMap<[u8; 32], (TokenHook, Instant)>>,
}

/// The hook a token names, read now or remembered.
pub struct Found {
    pub hook: Hook,
    /// Set when remembered: what the storing transaction must [`confirm`].
    pub remembered: Option<Stamp>,
}

/// What confirms a remembered hook: its row's id and version, and the token's hash.
#[derive(Debug, Clone)]
pub struct Stamp {
    hook_id: i64,
    version: String,
    token_hash: [u8; 32],
}

impl Tokens {
    /// The token's hook: remembered if it was found lately, else read from the database.
    pub async fn find(&self, pool: &PgPool, token: &str) -> Result<Option<Found>, sqlx::Error> {
        match self.recall(&hooks::token_hash(token)) {
            Some(found) => Ok(Some(found)),
            None => self.look_up(pool, token).await,
        }
    }

    /// The token's hook read from the database, and remembered (or the token forgotten, if
    /// it names none).
    pub async fn look_up(&self, pool: &PgPool, token: &str) -> Result<Option<Found>, sqlx::Error> {
        let hash = hooks::token_hash(token);
        let found = hooks::find_by_token(pool, token).await?;
        let mut known = self.lock();
        match &found {
            Some(hook) => {
                if known.len() >= MAX_REMEMBERED {
                    known.clear();
                }
                known.insert(hash, (hook.clone(), Instant::now()));
            }
            None => {
                known.remove(&hash);
            }
        }
        Ok(found.map(|found| Found {
            hook: found.hook,
            remembered: None,
        }))
    }

    fn recall(&self, hash: &[u8; 32]) -> Option<Found> {
        let known = self.lock();
        let (found, at) = known.get(hash)?;
        (at.elapsed() < REMEMBER_FOR).then(|| Found {
            hook: found.hook.clone(),
            remembered: Some(Stamp {
                hook_id: found.hook.id,
                version: found.version.clone(),
                token_hash: *hash,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], (TokenHook, Instant)>> {
        // The map holds no invariant a panicking holder could break.
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `EXISTS`: the hook `$id` is still at version `$version`, and the token hash `$hash` is
/// its current token or its previous one within the grace period.
macro_rules! unchanged_sql {
    ($id:literal, $version:literal, $hash:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM hooks WHERE id = ",
            $id,
            " AND xmin::text = ",
            $version,
            " AND (token_hash = ",
            $hash,
            " OR (prev_token_hash = ",
            $hash,
            " AND prev_token_expires_at > now())))"
        )
    };
}
pub(crate) use unchanged_sql;

impl Stamp {
    /// Binds the id, version and token hash, in the order of [`unchanged_sql!`]'s arguments.
    pub fn bind<'q>(&self, query: crate::db::Query<'q>) -> crate::db::Query<'q> {
        query
            .bind(self.hook_id)
            .bind(self.version.clone())
            .bind(self.token_hash.to_vec())
    }

    /// [`Stamp::bind`] for a `stamp`, else three NULLs (which `unchanged_sql!`'s callers
    /// take as "nothing to confirm").
    pub fn bind_or_null<'q>(
        stamp: Option<&Stamp>,
        query: crate::db::Query<'q>,
    ) -> crate::db::Query<'q> {
        match stamp {
            Some(stamp) => stamp.bind(query),
            None => query
                .bind(None::<i64>)
                .bind(None::<String>)
                .bind(None::<Vec<u8>>),
        }
    }
}

/// Whether a remembered hook is unchanged and the token still its own, in the caller's
/// transaction.
pub async fn confirm(conn: &mut PgConnection, stamp: &Stamp) -> Result<bool, sqlx::Error> {
    use sqlx::Row;
    let query = sqlx::query(concat!("SELECT ", unchanged_sql!("$1", "$2", "$3")));
    stamp.bind(query).fetch_one(conn).await?.try_get(0)
}
