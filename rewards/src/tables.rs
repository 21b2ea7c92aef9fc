//! An epoch's rows for the `rewards` and `fraud_flags` tables.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hexroad_lake::TableName;
use hexroad_lake::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use hexroad_lake::arrow::error::ArrowError;
use hexroad_lake::schema::stored_schema;

use crate::job::Outcome;

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn ints(values: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values.map(|v| v as i64)))
}

fn times(at: DateTime<Utc>, n: usize) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(at.timestamp_micros(), n))
            .with_timezone("UTC"),
    )
}

/// One row per contributor with a claim, amounts and their parts.
pub fn rewards_batch(
    outcome: &Outcome,
    table_version: u64,
    closed_at: DateTime<Utc>,
) -> Result<RecordBatch, ArrowError> {
    let rows: Vec<(&String, &crate::allocate::Allocation)> =
        outcome.split.by_contributor.iter().collect();
    let n = rows.len();
    let epoch = outcome.epoch.id.as_str();
    RecordBatch::try_new(
        stored_schema(TableName::Rewards),
        vec![
            strings(std::iter::repeat_n(epoch, n)),
            strings(rows.iter().map(|(who, _)| who.as_str())),
            ints(rows.iter().map(|(_, a)| a.amount)),
            ints(
                rows.iter()
                    .map(|(who, _)| outcome.frames.get(*who).copied().unwrap_or(0)),
            ),
            ints(rows.iter().map(|(_, a)| a.cells.len() as u64)),
            ints(rows.iter().map(|(_, a)| a.uncapped)),
            ints(rows.iter().map(|(_, a)| a.capped_off)),
            ints(rows.iter().map(|(_, a)| a.redistributed)),
            ints(std::iter::repeat_n(table_version, n)),
            times(closed_at, n),
        ],
    )
}

/// One row per fraud flag.
pub fn fraud_flags_batch(
    outcome: &Outcome,
    closed_at: DateTime<Utc>,
) -> Result<RecordBatch, ArrowError> {
    let f = &outcome.flags;
    let n = f.len();
    RecordBatch::try_new(
        stored_schema(TableName::FraudFlags),
        vec![
            strings(std::iter::repeat_n(outcome.epoch.id.as_str(), n)),
            strings(f.iter().map(|x| x.subject_kind)),
            strings(f.iter().map(|x| x.subject.as_str())),
            strings(f.iter().map(|x| x.rule)),
            strings(f.iter().map(|x| x.detail.as_str())),
            times(closed_at, n),
        ],
    )
}
