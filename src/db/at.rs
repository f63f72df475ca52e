//! [`At`]: a `timestamptz` read into a `jiff::Timestamp` and shown as RFC 3339 (UTC). One
//! type for every time that leaves the database, so views never format times differently.

use serde::{Deserialize, Serialize};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct At(pub jiff::Timestamp);

impl Type<Postgres> for At {
    fn type_info() -> PgTypeInfo {
        <jiff_sqlx::Timestamp as Type<Postgres>>::type_info()
    }
}

impl<'r> Decode<'r, Postgres> for At {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(At(<jiff_sqlx::Timestamp as Decode<Postgres>>::decode(
            value,
        )?
        .to_jiff()))
    }
}

impl Encode<'_, Postgres> for At {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        jiff_sqlx::Timestamp::from(self.0).encode_by_ref(buf)
    }
}

impl From<jiff::Timestamp> for At {
    fn from(ts: jiff::Timestamp) -> At {
        At(ts)
    }
}
