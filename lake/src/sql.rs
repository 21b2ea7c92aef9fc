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

impl Lake {
    /// Runs one SQL statement over the latest version of every table.
    pub async fn query(&self, sql: &str) -> Result<QueryOutput> {
        let ctx = self.session().await?;
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(QueryOutput { batches })
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
