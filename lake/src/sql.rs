//! Running SQL over the lake and rendering the answer for a terminal or a pipe.

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::util::pretty::pretty_format_batches;

use crate::{Error, Lake, Result};

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
    pub batches: Vec<RecordBatch>,
}

impl QueryOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// What one query from outside may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    pub timeout: std::time::Duration,
    /// Memory for joins, sorts and aggregations (DataFusion's memory pool).
    pub memory_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            timeout: std::time::Duration::from_secs(60),
            memory_bytes: 1 << 30,
        }
    }
}

impl Lake {
    /// Runs one SQL statement over the latest version of every table.
    /// For hexroad's own queries: no limits, nothing refused.
    pub async fn query(&self, sql: &str) -> Result<QueryOutput> {
        let ctx = self.session().await?;
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(QueryOutput { batches })
    }

    /// Runs one query from outside (an analyst, the HTTP API): read-only (no
    /// DDL, DML or `SET`), within `limits`' time and memory.
    pub async fn query_read_only(&self, sql: &str, limits: QueryLimits) -> Result<QueryOutput> {
        use deltalake::datafusion::execution::SessionStateBuilder;
        use deltalake::datafusion::execution::memory_pool::FairSpillPool;
        use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
        use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
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
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(std::sync::Arc::new(FairSpillPool::new(limits.memory_bytes)))
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new())
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        crate::h3sql::register(&ctx);
        self.register_tables(&ctx).await?;
        let options = deltalake::datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let run = async {
            let frame = ctx.sql_with_options(sql, options).await?;
            frame.collect().await
        };
        match tokio::time::timeout(limits.timeout, run).await {
            Ok(batches) => Ok(QueryOutput { batches: batches? }),
            Err(_) => Err(Error::QueryTimeout {
                limit_s: limits.timeout.as_secs_f64(),
            }),
        }
    }
}

/// Renders batches in `format`; the text ends with a newline.
pub fn render_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<String> {
    let mut out = Vec::new();
    match format {
        OutputFormat::Table => {
            let table = pretty_format_batches(batches)?;
            out.extend_from_slice(table.to_string().as_bytes());
            out.push(b'\n');
        }
        OutputFormat::Csv => {
            let mut writer = deltalake::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = deltalake::arrow::json::ArrayWriter::new(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
            out.push(b'\n');
        }
    }
    String::from_utf8(out)
        .map_err(|e| Error::Internal(format!("rendered output is not UTF-8: {e}")))
}
