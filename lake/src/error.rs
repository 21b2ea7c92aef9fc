use std::path::PathBuf;

/// Everything that can go wrong in the lake, with the table or path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data location given by the user cannot be used.
    #[error("invalid data location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },

    /// A Delta table could not be opened, created, read or written.
    #[error("table {table}")]
    Delta {
        table: &'static str,
        #[source]
        source: deltalake::DeltaTableError,
    },

    /// A table's state at a past moment is no longer kept: its log or
    /// files from then were cleaned up past the lake's retention.
    #[error(
        "table {table} as of {at} is no longer kept: its history from then is past the lake's retention"
    )]
    HistoryExpired {
        table: &'static str,
        at: chrono::DateTime<chrono::Utc>,
    },

    /// A blob could not be read or written.
    #[error("blob {key}")]
    Blob {
        key: String,
        #[source]
        source: object_store::Error,
    },

    /// An Arrow array or batch could not be built or read.
    #[error("building or reading Arrow data")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),

    /// A SQL query failed to plan or run (usually a mistake in the query).
    #[error("the query failed")]
    Query(#[from] deltalake::datafusion::error::DataFusionError),

    /// A query from outside tried to change something: the lake is read-only to SQL.
    #[error("read-only: {0}")]
    ReadOnly(String),

    /// A query ran past its time limit and was stopped.
    #[error("the query ran longer than its limit of {limit_s} s and was stopped")]
    QueryTimeout { limit_s: f64 },

    /// A query's answer grew past what one answer may hold.
    #[error(
        "the answer holds more than its limit of {limit_bytes} bytes: select fewer rows or columns, or aggregate"
    )]
    ResultTooLarge { limit_bytes: usize },

    /// A coordinate cannot be placed on the H3 grid.
    #[error(transparent)]
    Grid(#[from] hexroad_wire::grid::GridError),

    /// A local file could not be read.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The group commit carrying an upload failed (the store refused a
    /// write or could not be reached): nothing of the upload is listed,
    /// and sending it again is safe.
    #[error("the commit carrying this upload failed; nothing of it is listed, retry: {0}")]
    GroupCommit(String),

    /// Stored data broke an invariant `lake` itself keeps: likely a bug.
    #[error("internal error, likely a bug: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps a Delta error with the table it came from, for `map_err`.
    pub(crate) fn delta(
        table: crate::TableName,
    ) -> impl FnOnce(deltalake::DeltaTableError) -> Self {
        move |source| Self::Delta {
            table: table.as_str(),
            source,
        }
    }

    /// Wraps an object-store error with the key it concerned, for `map_err`.
    pub(crate) fn blob(key: &object_store::path::Path) -> impl FnOnce(object_store::Error) -> Self {
        let key = key.to_string();
        move |source| Self::Blob { key, source }
    }
}

/// `Result` with the lake's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
