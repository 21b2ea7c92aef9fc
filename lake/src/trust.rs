//! Who may join and what they keep private: privacy zones, contributor
//! accounts and what vouched for each device (`privacy_zones`,
//! `contributors`, `enrolments`). Each table is an append-only log; the
//! latest row of a zone or an account is its state.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::datafusion::scalar::ScalarValue;

use crate::columns;
use crate::reads::{Snapshot, outside_privacy_zones, stored};
use crate::schema::{TableName, stored_schema};
use crate::{ContributorId, DeviceId, FrameId, Lake, Result};

/// Rewritten whenever something published becomes hidden.
const HIDDEN_MARKER: &str = "_hexroad/hidden";

/// An area where nothing of a contributor's is published: no frames, no
/// track, no coverage.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyZone {
    pub zone_id: uuid::Uuid,
    pub contributor_id: ContributorId,
    /// The device that declared it.
    pub device_id: DeviceId,
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
    /// False once withdrawn.
    pub active: bool,
    pub changed_at: DateTime<Utc>,
}

impl PrivacyZone {
    /// Whether `(lat, lon)` lies inside the zone (edge included).
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        hexroad_wire::grid::haversine_m((self.lat, self.lon), (lat, lon)) <= self.radius_m
    }
}

/// The active zones, grouped by the contributor whose data they hide.
#[derive(Debug, Clone, Default)]
pub struct PrivacyZones {
    by_contributor: HashMap<ContributorId, Vec<PrivacyZone>>,
}

impl PrivacyZones {
    pub fn new(zones: Vec<PrivacyZone>) -> Self {
        let mut by_contributor: HashMap<ContributorId, Vec<PrivacyZone>> = HashMap::new();
        for z in zones.into_iter().filter(|z| z.active) {
            by_contributor
                .entry(z.contributor_id.clone())
                .or_default()
                .push(z);
        }
        Self { by_contributor }
    }

    /// Whether a point of `contributor`'s falls in one of its zones.
    pub fn hides(&self, contributor: &ContributorId, lat: f64, lon: f64) -> bool {
        self.by_contributor
            .get(contributor)
            .is_some_and(|zones| zones.iter().any(|z| z.contains(lat, lon)))
    }

    /// Whether any point of any contributor falls in a zone.
    pub fn hides_anyones(&self, lat: f64, lon: f64) -> bool {
        self.by_contributor
            .values()
            .flatten()
            .any(|z| z.contains(lat, lon))
    }

    pub fn is_empty(&self) -> bool {
        self.by_contributor.is_empty()
    }

    /// Every active zone.
    pub fn iter(&self) -> impl Iterator<Item = &PrivacyZone> {
        self.by_contributor.values().flatten()
    }
}

/// A contributor account's signing key at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContributorKey {
    pub contributor_id: ContributorId,
    /// The ed25519 public key.
    pub public_key: [u8; 32],
    pub changed_at: DateTime<Utc>,
}

/// What vouched for one registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    pub device_id: DeviceId,
    pub contributor_id: ContributorId,
    /// The trusted manufacturer whose key attested the device, and the
    /// serial it attested.
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    /// Whether the contributor's key signed the binding.
    pub bound: bool,
    pub at: DateTime<Utc>,
}

fn ts(values: impl IntoIterator<Item = DateTime<Utc>>) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from_iter_values(
            values.into_iter().map(|t| t.timestamp_micros()),
        )
        .with_timezone("UTC"),
    )
}

fn one_str(s: &str) -> ArrayRef {
    Arc::new(StringArray::from(vec![s]))
}

fn zone_batch(z: &PrivacyZone) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        one_str(&z.zone_id.hyphenated().to_string()),
        one_str(z.contributor_id.as_str()),
        one_str(z.device_id.as_str()),
        Arc::new(Float64Array::from(vec![z.lat])),
        Arc::new(Float64Array::from(vec![z.lon])),
        Arc::new(Float64Array::from(vec![z.radius_m])),
        one_str(if z.active { "active" } else { "withdrawn" }),
        ts([z.changed_at]),
    ];
    Ok(RecordBatch::try_new(
        stored_schema(TableName::PrivacyZones),
        cols,
    )?)
}

fn key_batch(k: &ContributorKey) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        one_str(k.contributor_id.as_str()),
        one_str(&hexroad_wire::enrol::public_key_hex(&k.public_key)),
        ts([k.changed_at]),
    ];
    Ok(RecordBatch::try_new(
        stored_schema(TableName::Contributors),
        cols,
    )?)
}

fn enrolment_batch(e: &Enrolment) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        one_str(e.device_id.as_str()),
        one_str(e.contributor_id.as_str()),
        Arc::new(StringArray::from(vec![e.manufacturer.as_deref()])),
        Arc::new(StringArray::from(vec![e.serial.as_deref()])),
        Arc::new(BooleanArray::from(vec![e.bound])),
        ts([e.at]),
    ];
    Ok(RecordBatch::try_new(
        stored_schema(TableName::Enrolments),
        cols,
    )?)
}

impl Lake {
    /// Declares or withdraws a privacy zone.
    pub async fn record_privacy_zone(&self, zone: &PrivacyZone) -> Result<()> {
        self.append(TableName::PrivacyZones, zone_batch(zone)?)
            .await
    }

    /// Every zone's latest state, withdrawn ones included.
    pub async fn privacy_zones(&self) -> Result<Vec<PrivacyZone>> {
        self.snapshot().await?.privacy_zones().await
    }

    /// Records an account's key: its first (the account is created) or a
    /// rotation (the latest row is the key in force).
    pub async fn record_contributor_key(&self, key: &ContributorKey) -> Result<()> {
        self.append(TableName::Contributors, key_batch(key)?).await
    }

    /// The key in force for `contributor`, if it has an account.
    pub async fn contributor_key(
        &self,
        contributor: &ContributorId,
    ) -> Result<Option<ContributorKey>> {
        let batches = self
            .read(
                "SELECT contributor_id, public_key, changed_at FROM contributors \
                 WHERE contributor_id = $1 ORDER BY changed_at DESC LIMIT 1",
                vec![ScalarValue::from(contributor.as_str())],
            )
            .await?;
        for b in &batches {
            let keys = columns::strings(b, "public_key")?;
            let at = columns::times(b, "changed_at")?;
            if let (Some(key), Some(at)) = (keys.first(), at.first()) {
                return Ok(Some(ContributorKey {
                    contributor_id: contributor.clone(),
                    public_key: hexroad_wire::enrol::public_key_from_hex(key)
                        .ok_or_else(|| crate::reads::malformed(key, "contributor key"))?,
                    changed_at: *at,
                }));
            }
        }
        Ok(None)
    }

    /// Tells every reader that something published is hidden now (a zone
    /// declared or withdrawn, a contributor forgotten): the map forgets its
    /// tiles and recomputes which images it may serve.
    pub async fn note_hidden_change(&self) -> Result<()> {
        use object_store::{ObjectStoreExt, PutPayload};
        let marker = uuid::Uuid::new_v4().hyphenated().to_string();
        self.blobs
            .put(
                &object_store::path::Path::from(HIDDEN_MARKER),
                PutPayload::from(marker.into_bytes()),
            )
            .await
            .map_err(|source| crate::Error::Blob {
                key: HIDDEN_MARKER.into(),
                source,
            })?;
        Ok(())
    }

    /// Changes whenever [`Lake::note_hidden_change`] is called: one HEAD.
    pub async fn hidden_generation(&self) -> Result<Option<String>> {
        use object_store::ObjectStoreExt;
        match self
            .blobs
            .head(&object_store::path::Path::from(HIDDEN_MARKER))
            .await
        {
            Ok(meta) => Ok(Some(format!(
                "{}/{}/{:?}",
                meta.last_modified.timestamp_nanos_opt().unwrap_or_default(),
                meta.size,
                meta.e_tag
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(crate::Error::Blob {
                key: HIDDEN_MARKER.into(),
                source,
            }),
        }
    }

    /// Published frames inside their contributor's active privacy zones:
    /// their images are not served.
    pub async fn frames_hidden_by_zones(&self) -> Result<HashSet<FrameId>> {
        let batches = self
            .read(
                concat!(
                    "SELECT frame_id FROM frames WHERE image_key IS NOT NULL \
                     AND contributor_id IN (SELECT contributor_id FROM privacy_zones) \
                     EXCEPT SELECT f.frame_id FROM frames f WHERE f.image_key IS NOT NULL AND ",
                    outside_privacy_zones!("f.lat", "f.lon", "f.contributor_id")
                ),
                vec![],
            )
            .await?;
        let mut out = HashSet::new();
        for b in &batches {
            for id in columns::strings(b, "frame_id")? {
                out.insert(stored(&id, "frame id")?);
            }
        }
        Ok(out)
    }

    /// Records what vouched for a registration.
    pub async fn record_enrolment(&self, enrolment: &Enrolment) -> Result<()> {
        self.append(TableName::Enrolments, enrolment_batch(enrolment)?)
            .await
    }
}

impl Snapshot {
    /// Every zone's latest state, withdrawn ones included.
    pub async fn privacy_zones(&self) -> Result<Vec<PrivacyZone>> {
        let batches = self
            .read(
                "SELECT zone_id, contributor_id, device_id, lat, lon, radius_m, status, changed_at \
                 FROM (SELECT *, row_number() OVER \
                       (PARTITION BY zone_id ORDER BY changed_at DESC) AS n FROM privacy_zones) \
                 WHERE n = 1",
                vec![],
            )
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            let ids = columns::strings(b, "zone_id")?;
            let contributors = columns::strings(b, "contributor_id")?;
            let devices = columns::strings(b, "device_id")?;
            let lats = columns::f64s(b, "lat")?;
            let lons = columns::f64s(b, "lon")?;
            let radii = columns::f64s(b, "radius_m")?;
            let statuses = columns::strings(b, "status")?;
            let at = columns::times(b, "changed_at")?;
            for i in 0..b.num_rows() {
                out.push(PrivacyZone {
                    zone_id: uuid::Uuid::parse_str(&ids[i])
                        .map_err(|_| crate::reads::malformed(&ids[i], "zone id"))?,
                    contributor_id: stored(&contributors[i], "contributor id")?,
                    device_id: stored(&devices[i], "device id")?,
                    lat: lats[i],
                    lon: lons[i],
                    radius_m: radii[i],
                    active: statuses[i] == "active",
                    changed_at: at[i],
                });
            }
        }
        out.sort_by_key(|z| z.zone_id);
        Ok(out)
    }

    /// The devices each contributor's key has bound: the only devices the
    /// rules that act on "a contributor's devices" may act on.
    pub async fn bound_devices(&self) -> Result<HashMap<ContributorId, BTreeSet<DeviceId>>> {
        let batches = self
            .read(
                "SELECT DISTINCT contributor_id, device_id FROM enrolments WHERE bound",
                vec![],
            )
            .await?;
        let mut out: HashMap<ContributorId, BTreeSet<DeviceId>> = HashMap::new();
        for b in &batches {
            let contributors = columns::strings(b, "contributor_id")?;
            let devices = columns::strings(b, "device_id")?;
            for (c, d) in contributors.iter().zip(&devices) {
                out.entry(stored(c, "contributor id")?)
                    .or_default()
                    .insert(stored(d, "device id")?);
            }
        }
        Ok(out)
    }
}
