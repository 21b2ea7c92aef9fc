//! Reading a query's answer column by column as plain Rust values, cast to
//! the type the caller wants, for the crates that turn answers into tiles
//! and rewards.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType, UInt64Type,
};

use crate::{Error, Result};

/// Column `name` of `batch`, cast to `to`. A missing column is a bug in the
/// query that asked for it.
pub fn column(batch: &RecordBatch, name: &str, to: &DataType) -> Result<Arc<dyn Array>> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("the answer has no column {name}")))?;
    Ok(cast(c, to)?)
}

pub fn u64s(batch: &RecordBatch, name: &str) -> Result<Vec<u64>> {
    let c = column(batch, name, &DataType::UInt64)?;
    Ok(c.as_primitive::<UInt64Type>().values().to_vec())
}

pub fn i64s(batch: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let c = column(batch, name, &DataType::Int64)?;
    Ok(c.as_primitive::<Int64Type>().values().to_vec())
}

pub fn f64s(batch: &RecordBatch, name: &str) -> Result<Vec<f64>> {
    let c = column(batch, name, &DataType::Float64)?;
    Ok(c.as_primitive::<Float64Type>().values().to_vec())
}

/// Strings, a null as "".
pub fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<String>> {
    let c = column(batch, name, &DataType::Utf8)?;
    Ok(c.as_string::<i32>()
        .iter()
        .map(|s| s.unwrap_or_default().to_owned())
        .collect())
}

/// Timestamps as microseconds since the epoch.
pub fn micros(batch: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let c = column(
        batch,
        name,
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )?;
    Ok(c.as_primitive::<TimestampMicrosecondType>()
        .values()
        .to_vec())
}

pub fn times(batch: &RecordBatch, name: &str) -> Result<Vec<DateTime<Utc>>> {
    Ok(micros(batch, name)?
        .into_iter()
        .map(|us| DateTime::from_timestamp_micros(us).unwrap_or_default())
        .collect())
}

/// Strings, a null as `None`.
pub fn opt_strings(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let c = column(batch, name, &DataType::Utf8)?;
    Ok(c.as_string::<i32>()
        .iter()
        .map(|s| s.map(str::to_owned))
        .collect())
}

/// Numbers, a null as `None`.
pub fn opt_f64s(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let c = column(batch, name, &DataType::Float64)?;
    Ok(c.as_primitive::<Float64Type>().iter().collect())
}
