//! Reading a query's answer column by column as plain Rust values, cast to
//! the type the caller wants, for the crates that turn answers into tiles
//! and rewards.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{Array, AsArray, PrimitiveArray, RecordBatch, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    UInt64Type,
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

/// Column `name` as `T`'s array (after a cast to `T`, so a mismatch is a
/// bug reported as an error, never a panic).
fn primitive<T: ArrowPrimitiveType>(batch: &RecordBatch, name: &str) -> Result<PrimitiveArray<T>> {
    let c = column(batch, name, &T::DATA_TYPE)?;
    c.as_primitive_opt::<T>()
        .cloned()
        .ok_or_else(|| Error::Internal(format!("column {name} is not {}", T::DATA_TYPE)))
}

/// Column `name` as UTF-8 strings, borrowed in place (a cast only when the
/// answer holds another type): readers that intern millions of ids copy
/// none of them.
pub(crate) fn utf8(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    let c = column(batch, name, &DataType::Utf8)?;
    c.as_string_opt::<i32>()
        .cloned()
        .ok_or_else(|| Error::Internal(format!("column {name} is not text")))
}

pub fn u64s(batch: &RecordBatch, name: &str) -> Result<Vec<u64>> {
    Ok(primitive::<UInt64Type>(batch, name)?.values().to_vec())
}

pub fn i64s(batch: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    Ok(primitive::<Int64Type>(batch, name)?.values().to_vec())
}

pub fn f64s(batch: &RecordBatch, name: &str) -> Result<Vec<f64>> {
    Ok(primitive::<Float64Type>(batch, name)?.values().to_vec())
}

/// Strings, a null as "".
pub fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<String>> {
    Ok(utf8(batch, name)?
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
    let c = c
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| Error::Internal(format!("column {name} is not a timestamp")))?;
    Ok(c.values().to_vec())
}

pub fn times(batch: &RecordBatch, name: &str) -> Result<Vec<DateTime<Utc>>> {
    Ok(micros(batch, name)?
        .into_iter()
        .map(|us| DateTime::from_timestamp_micros(us).unwrap_or_default())
        .collect())
}

/// Strings, a null as `None`.
pub fn opt_strings(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    Ok(utf8(batch, name)?
        .iter()
        .map(|s| s.map(str::to_owned))
        .collect())
}

/// Numbers, a null as `None`.
pub fn opt_f64s(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    Ok(primitive::<Float64Type>(batch, name)?.iter().collect())
}
