//! Running SQL over the lake and rendering the answer for a terminal or a pipe.

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::util::pretty::pretty_format_batches;
use deltalake::datafusion::dataframe::DataFrame;
use deltalake::datafusion::prelude::SessionContext;

use crate::{Error, Lake, Result, Role};

/// How `hexroad sql` prints a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// An aligned text table for people.
    #[default]
    Table,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// A JSON array of objects, one per row.
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Self::Table),
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown format {other:?}: expected table, csv or json"
            )),
        }
    }
}

/// A query's result batches.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// The answer's columns, also when it has no rows.
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// What one query from outside may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLimits {
    pub timeout: std::time::Duration,
    /// Memory for joins, sorts and aggregations (DataFusion's memory pool).
    pub memory_bytes: usize,
    /// The most the answer may hold, counted in Arrow memory as it is
    /// produced (and again when rendered as text).
    pub max_result_bytes: usize,
    /// Where a query spills what does not fit in `memory_bytes`; `None`:
    /// the system's temporary folder.
    pub spill_dir: Option<std::path::PathBuf>,
    /// The most one query may spill.
    pub max_spill_bytes: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            timeout: std::time::Duration::from_secs(60),
            memory_bytes: 1 << 30,
            max_result_bytes: 64 << 20,
            spill_dir: None,
            max_spill_bytes: 4 << 30,
        }
    }
}

impl Lake {
    /// Runs one SQL statement over the latest version of every table.
    /// For hexroad's own queries: no limits, nothing refused.
    pub async fn query(&self, sql: &str) -> Result<QueryOutput> {
        let ctx = self.session().await?;
        let frame = ctx.sql(sql).await?;
        let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        Ok(QueryOutput { schema, batches })
    }

    /// Runs one query from outside (an analyst, the HTTP API, Flight SQL):
    /// read-only (no DDL, DML or `SET`), within `limits`' time and memory.
    /// The answer is counted as it streams in and refused once it passes
    /// `limits.max_result_bytes`, before it is all held.
    /// `role` says what the query may name: the public views, or
    /// everything.
    pub async fn query_read_only(
        &self,
        sql: &str,
        limits: &QueryLimits,
        role: Role,
    ) -> Result<QueryOutput> {
        use futures::StreamExt;
        within(limits, async {
            let frame = self.plan_read_only(sql, limits, role).await?;
            let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
            let mut stream = frame.execute_stream().await?;
            let (mut batches, mut held) = (Vec::new(), 0usize);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                held = held.saturating_add(batch.get_array_memory_size());
                if held > limits.max_result_bytes {
                    return Err(Error::ResultTooLarge {
                        limit_bytes: limits.max_result_bytes,
                    });
                }
                batches.push(batch);
            }
            Ok(QueryOutput { schema, batches })
        })
        .await
    }

    /// The schema a query from outside would answer with, without running
    /// it; refuses what [`Lake::query_read_only`] refuses.
    pub async fn schema_read_only(
        &self,
        sql: &str,
        limits: &QueryLimits,
        role: Role,
    ) -> Result<SchemaRef> {
        within(limits, async {
            let frame = self.plan_read_only(sql, limits, role).await?;
            Ok(std::sync::Arc::new(frame.schema().as_arrow().clone()))
        })
        .await
    }

    /// Parses and plans a query from outside in a session of its own whose
    /// memory pool is `limits.memory_bytes`, spilling at most
    /// `limits.max_spill_bytes` into `limits.spill_dir`.
    async fn plan_read_only(
        &self,
        sql: &str,
        limits: &QueryLimits,
        role: Role,
    ) -> Result<DataFrame> {
        use deltalake::datafusion::execution::SessionStateBuilder;
        use deltalake::datafusion::execution::memory_pool::FairSpillPool;
        use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
        use deltalake::datafusion::sql::parser::{DFParser, Statement};

        // Refuse anything but queries before planning, with a message that
        // names the statement.
        let statements = DFParser::parse_sql(sql)?;
        if statements.len() != 1 {
            return Err(Error::ReadOnly(format!(
                "one statement at a time, got {}",
                statements.len()
            )));
        }
        let is_query = matches!(
            &statements[0],
            Statement::Statement(s) if matches!(**s, deltalake::datafusion::sql::sqlparser::ast::Statement::Query(_))
        ) || matches!(&statements[0], Statement::Explain(_));
        if !is_query {
            let first = sql
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            return Err(Error::ReadOnly(format!(
                "{first} is not allowed: only SELECT (and EXPLAIN) queries run here"
            )));
        }
        let mut runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(std::sync::Arc::new(FairSpillPool::new(limits.memory_bytes)))
            .with_max_temp_directory_size(limits.max_spill_bytes)
            .with_cache_manager(crate::session::metadata_cache(Some(&self.runtime)));
        if let Some(dir) = &limits.spill_dir {
            runtime = runtime.with_temp_file_path(dir);
        }
        let runtime = runtime.build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(crate::session::session_config())
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        crate::h3sql::register(&ctx);
        match role {
            Role::Operator => self.register_tables(&ctx).await?,
            Role::Public { min_count } => self.register_public_views(&ctx, min_count).await?,
        }
        let options = deltalake::datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        Ok(ctx.sql_with_options(sql, options).await?)
    }
}

impl Lake {
    /// Every relation `role` may name, with its kind (`TABLE` or `VIEW`)
    /// and columns: what a catalogue listing (Flight SQL's `GetTables`)
    /// shows.
    pub async fn relations(&self, role: Role) -> Result<Vec<(String, &'static str, SchemaRef)>> {
        use crate::schema::TableName;
        let ctx = self.new_session();
        crate::h3sql::register(&ctx);
        let mut out = Vec::new();
        let views: Vec<&str> = match role {
            Role::Operator => {
                self.register_tables(&ctx).await?;
                for name in TableName::ALL {
                    out.push((
                        name.as_str().to_owned(),
                        "TABLE",
                        crate::schema::schema(name),
                    ));
                }
                crate::views::VIEWS.iter().map(|(name, _)| *name).collect()
            }
            Role::Public { min_count } => {
                self.register_public_views(&ctx, min_count).await?;
                crate::public::PUBLIC_VIEWS.to_vec()
            }
        };
        for name in views {
            let frame = ctx.table(name).await?;
            out.push((
                name.to_owned(),
                "VIEW",
                std::sync::Arc::new(frame.schema().as_arrow().clone()),
            ));
        }
        Ok(out)
    }
}

/// `work`, stopped with [`Error::QueryTimeout`] at `limits.timeout`.
async fn within<T>(limits: &QueryLimits, work: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(done) => done,
        Err(_) => Err(Error::QueryTimeout {
            limit_s: limits.timeout.as_secs_f64(),
        }),
    }
}

/// Why a query from outside got no answer, as the endpoints name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// DDL, DML, `SET`, or more than one statement.
    ReadOnly,
    /// Past its time limit.
    Timeout,
    /// Past its memory limit.
    MemoryLimit,
    /// The answer would hold more than an answer may.
    ResultTooLarge,
    /// The query is wrong: syntax, names, types.
    BadQuery,
    /// Not the query's fault: the server's log says more.
    Internal,
}

impl Refusal {
    /// The code in HTTP error bodies.
    pub fn code(self) -> &'static str {
        match self {
            Self::ReadOnly => "read_only",
            Self::Timeout => "query_timeout",
            Self::MemoryLimit => "memory_limit",
            Self::ResultTooLarge => "result_too_large",
            Self::BadQuery => "bad_query",
            Self::Internal => "internal",
        }
    }
}

impl Error {
    /// How an endpoint should report this error from a query from outside.
    pub fn refusal(&self) -> Refusal {
        match self {
            Error::ReadOnly(_) => Refusal::ReadOnly,
            Error::QueryTimeout { .. } => Refusal::Timeout,
            Error::ResultTooLarge { .. } => Refusal::ResultTooLarge,
            Error::Query(e) if is_resources_exhausted(e) => Refusal::MemoryLimit,
            Error::Query(_) => Refusal::BadQuery,
            _ => Refusal::Internal,
        }
    }

    /// The error and its causes on one line, as a client should see them.
    pub fn full_message(&self) -> String {
        let mut parts = vec![self.to_string()];
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            parts.push(s.to_string());
            source = s.source();
        }
        parts.join(": ")
    }
}

fn is_resources_exhausted(e: &deltalake::datafusion::error::DataFusionError) -> bool {
    use deltalake::datafusion::error::DataFusionError;
    match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => true,
        other => other.to_string().contains("Resources exhausted"),
    }
}

/// Renders batches in `format`; the text ends with a newline.
pub fn render_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<String> {
    render_batches_within(batches, format, usize::MAX)
}

/// Renders batches in `format`, refusing once the text passes `max_bytes`
/// (text can be several times the Arrow size the answer was counted in).
pub fn render_batches_within(
    batches: &[RecordBatch],
    format: OutputFormat,
    max_bytes: usize,
) -> Result<String> {
    let mut out = Bounded {
        bytes: Vec::new(),
        max: max_bytes,
        over: false,
    };
    let written = write_batches(batches, format, &mut out);
    if out.over {
        return Err(Error::ResultTooLarge {
            limit_bytes: max_bytes,
        });
    }
    written?;
    let mut out = out.bytes;
    if format == OutputFormat::Json && out.is_empty() {
        out.extend_from_slice(b"[]");
    }
    if format != OutputFormat::Csv {
        out.push(b'\n');
    }
    String::from_utf8(out)
        .map_err(|e| Error::Internal(format!("rendered output is not UTF-8: {e}")))
}

fn write_batches(batches: &[RecordBatch], format: OutputFormat, out: &mut Bounded) -> Result<()> {
    use std::io::Write;
    match format {
        OutputFormat::Table => {
            let table = pretty_format_batches(batches)?;
            write!(out, "{table}")
                .map_err(|e| Error::Internal(format!("rendering a table: {e}")))?;
        }
        OutputFormat::Csv => {
            let mut writer = deltalake::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = deltalake::arrow::json::ArrayWriter::new(out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}

/// Text being rendered, refusing writes past `max` bytes.
struct Bounded {
    bytes: Vec<u8>,
    max: usize,
    over: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.max {
            self.over = true;
            return Err(std::io::Error::other("the answer passed its size limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
