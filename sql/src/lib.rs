//! SQL for analysts over hexroad's tables, on two transports: `POST /v1/sql`
//! ([`http`]: JSON, CSV or Arrow IPC) and Arrow Flight SQL ([`flight`], for
//! ADBC, JDBC and BI tools).
//!
//! Both run every query through `Lake::query_read_only`, so the read-only
//! check, the time, memory, spill and answer-size limits are the lake's and
//! the same on either port, and both take their turn from one
//! [`QueryPool`]: a runtime apart from ingest's, a few queries at once.
//! Refusals carry the same codes on both.
//!
//! When not to use it: for hexroad's own stages. They read the tables through
//! `lake`'s typed reads, never through SQL text.

pub mod flight;
pub mod http;
mod pool;

pub use pool::{Busy, QueryPool};
