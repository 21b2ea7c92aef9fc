//! What the public may query: a handful of views over published frames,
//! with no device, upload or contributor id, no raw fix, nothing inside a
//! privacy zone, times and positions coarsened, contributors under
//! pseudonyms that change every ISO week, and coverage cells seen fewer
//! than `min_count` times left out. The raw tables are the operator's.
//!
//! The views are planned in a private session that holds the tables and
//! handed to the caller's session as finished plans, so a public query can
//! name the views and nothing under them.

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, StringBuilder};
use deltalake::arrow::datatypes::{DataType, TimeUnit};
use deltalake::datafusion::common::ScalarValue;
use deltalake::datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use deltalake::datafusion::prelude::SessionContext;
use sha2::{Digest, Sha256};

use crate::reads::outside_privacy_zones;
use crate::{Error, Lake, Result};

/// Who is asking, and so which relations a query may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The raw tables and the operator's views (`fleet` among them).
    Operator,
    /// The public views only; aggregates over fewer than `min_count` frames
    /// are left out.
    Public { min_count: u64 },
}

/// Where the pseudonym key lives: made once per lake, never published.
const PSEUDONYM_KEY: &str = "_hexroad/pseudonym.key";

/// `(name, SELECT …, binds the minimum count)`, in dependency order. A view
/// is named `public_<name>` in the private session, so later views can use
/// earlier ones; `published` stays private.
const VIEWS: &[(&str, &str, bool)] = &[
    (
        "published",
        concat!(
            "SELECT f.* FROM frames f WHERE f.image_key IS NOT NULL AND ",
            outside_privacy_zones!("f.lat", "f.lon", "f.contributor_id")
        ),
        false,
    ),
    (
        "frames",
        "SELECT frame_id, '/frames/' || frame_id || '.jpg' AS image_url, \
                date_trunc('hour', ts) AS hour, round(lat, 4) AS lat, round(lon, 4) AS lon, \
                h3_cell_to_parent(cell, 12) AS cell, round(heading) AS heading, \
                contributor_pseudonym(contributor_id, ts) AS contributor, \
                iso_week(ts) AS week, faces_blurred, plates_blurred, model_versions \
         FROM public_published",
        false,
    ),
    (
        "coverage",
        "SELECT h3_cell_to_parent(cell, 10) AS cell, \
                date_trunc('day', min(ts)) AS first_seen, \
                date_trunc('day', max(ts)) AS last_seen, \
                count(*) AS frames, count(DISTINCT contributor_id) AS contributors \
         FROM public_published GROUP BY h3_cell_to_parent(cell, 10) \
         HAVING count(*) >= $1",
        true,
    ),
    (
        "freshness",
        "SELECT cell, last_seen, frames, contributors, \
         (date_part('epoch', now()) - date_part('epoch', last_seen)) / 86400.0 AS age_days \
         FROM public_coverage",
        false,
    ),
];

/// The relations the public may name, in the order they are listed.
pub const PUBLIC_VIEWS: [&str; 3] = ["coverage", "freshness", "frames"];

impl Lake {
    /// Registers the public views in `ctx`, planned over the latest tables.
    pub(crate) async fn register_public_views(
        &self,
        ctx: &SessionContext,
        min_count: u64,
    ) -> Result<()> {
        let key = self.pseudonym_key().await?;
        let private = self.new_session();
        crate::h3sql::register(&private);
        private.register_udf(pseudonym_udf(key));
        private.register_udf(iso_week_udf());
        self.register_tables(&private).await?;
        let min = i64::try_from(min_count).unwrap_or(i64::MAX);
        for (name, sql, binds_min) in VIEWS {
            let mut frame = private.sql(sql).await?;
            if *binds_min {
                frame = frame.with_param_values(vec![ScalarValue::Int64(Some(min))])?;
            }
            private.register_table(format!("public_{name}"), frame.clone().into_view())?;
            if PUBLIC_VIEWS.contains(name) {
                ctx.register_table(*name, frame.into_view())?;
            }
        }
        Ok(())
    }

    /// The secret behind contributor pseudonyms, made at first use. Created
    /// only if absent, so every server on one lake uses the same key.
    async fn pseudonym_key(&self) -> Result<[u8; 32]> {
        self.pseudonym_key
            .get_or_try_init(|| async {
                use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
                let path = object_store::path::Path::from(PSEUDONYM_KEY);
                let mut fresh = Vec::with_capacity(32);
                fresh.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
                fresh.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
                let created = self
                    .blobs
                    .put_opts(
                        &path,
                        PutPayload::from(fresh),
                        PutOptions::from(PutMode::Create),
                    )
                    .await;
                match created {
                    Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
                    Err(source) => {
                        return Err(Error::Blob {
                            key: PSEUDONYM_KEY.into(),
                            source,
                        });
                    }
                }
                let blob = |source| Error::Blob {
                    key: PSEUDONYM_KEY.into(),
                    source,
                };
                let stored = self
                    .blobs
                    .get(&path)
                    .await
                    .map_err(blob)?
                    .bytes()
                    .await
                    .map_err(blob)?;
                <[u8; 32]>::try_from(stored.as_ref())
                    .map_err(|_| Error::Internal(format!("{PSEUDONYM_KEY} is not 32 bytes")))
            })
            .await
            .copied()
    }
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `"2026-W47"`: the ISO week a moment falls in (UTC).
fn iso_week(micros: i64) -> Option<String> {
    use chrono::Datelike;
    let t = chrono::DateTime::from_timestamp_micros(micros)?;
    let w = t.iso_week();
    Some(format!("{}-W{:02}", w.year(), w.week()))
}

/// HMAC-SHA256 (RFC 2104) of `message` under a 32-byte key.
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut inner_pad = [0x36u8; 64];
    let mut outer_pad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        inner_pad[i] ^= k;
        outer_pad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// A contributor's name for the public in the ISO week of `micros`: the
/// same all week, unrelated from one week to the next.
pub fn pseudonym(key: &[u8; 32], contributor: &str, micros: i64) -> Option<String> {
    let week = iso_week(micros)?;
    let mut message = Vec::with_capacity(week.len() + 1 + contributor.len());
    message.extend_from_slice(week.as_bytes());
    message.push(0);
    message.extend_from_slice(contributor.as_bytes());
    let mac = hmac_sha256(key, &message);
    Some(format!(
        "p-{}",
        mac[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

fn strings_and_times(
    args: &[ColumnarValue],
) -> deltalake::datafusion::error::Result<(Vec<ArrayRef>, usize)> {
    let n = args
        .iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1);
    let arrays = args
        .iter()
        .map(|a| a.clone().into_array(n))
        .collect::<deltalake::datafusion::error::Result<Vec<_>>>()?;
    Ok((arrays, n))
}

fn pseudonym_udf(key: [u8; 32]) -> ScalarUDF {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::TimestampMicrosecondType;
    let f = move |args: &[ColumnarValue]| {
        let (arrays, n) = strings_and_times(args)?;
        let names = arrays[0].as_string::<i32>();
        let times = arrays[1].as_primitive::<TimestampMicrosecondType>();
        let mut out = StringBuilder::with_capacity(n, n * 18);
        for i in 0..n {
            if names.is_null(i) || times.is_null(i) {
                out.append_null();
            } else {
                out.append_option(pseudonym(&key, names.value(i), times.value(i)));
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    };
    create_udf(
        "contributor_pseudonym",
        vec![DataType::Utf8, timestamp_type()],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(f),
    )
}

fn iso_week_udf() -> ScalarUDF {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::TimestampMicrosecondType;
    let f = |args: &[ColumnarValue]| {
        let (arrays, n) = strings_and_times(args)?;
        let times = arrays[0].as_primitive::<TimestampMicrosecondType>();
        let mut out = StringBuilder::with_capacity(n, n * 8);
        for i in 0..n {
            out.append_option(if times.is_null(i) {
                None
            } else {
                iso_week(times.value(i))
            });
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    };
    create_udf(
        "iso_week",
        vec![timestamp_type()],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(f),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_hold_for_a_week_and_hide_the_name() {
        let key = [7u8; 32];
        let a = pseudonym(&key, "alice@example.com", 1_764_000_000_000_000).unwrap();
        let same_week = pseudonym(&key, "alice@example.com", 1_764_000_600_000_000).unwrap();
        let next_week = pseudonym(
            &key,
            "alice@example.com",
            1_764_000_000_000_000 + 7 * 86_400_000_000,
        )
        .unwrap();
        let other = pseudonym(&key, "bob", 1_764_000_000_000_000).unwrap();
        assert_eq!(a, same_week);
        assert_ne!(a, next_week);
        assert_ne!(a, other);
        assert!(!a.contains("alice"));
        assert_eq!(a.len(), 18);
    }

    #[test]
    fn hmac_sha256_matches_pythons_hmac() {
        // HMAC-SHA256 with key 0x0b × 32 over "Hi There", computed with
        // Python's hmac module: an independent implementation.
        let key = [0x0bu8; 32];
        let mac = hmac_sha256(&key, b"Hi There");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }
}
