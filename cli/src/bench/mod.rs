//! `hexroad bench …`: each benchmark measures hexroad beside the tool a
//! user would pick instead, in the same run, and prints the ratio.

mod abuse;
mod common;
mod epoch;
mod ingest;
mod lake;
mod sql;
mod synthetic;
mod tiles;
mod track;
mod vision;

use anyhow::Result;

#[derive(Debug, clap::Subcommand)]
pub enum Which {
    /// Upload MB/s with many concurrent devices, and p50/p99 per 1 MiB chunk.
    Ingest(ingest::Args),
    /// Anonymized 720p frames/s, beside the ONNX model alone and deface.
    Vision(vision::Args),
    /// Three analyst queries on millions of frame rows, beside DuckDB.
    Sql(sql::Args),
    /// Tiles/s and latency, cold and cached, beside martin on the PMTiles export.
    Tiles(tiles::Args),
    /// A reward epoch over millions of frames: time and peak memory.
    Epoch(epoch::Args),
    /// Reading a 10 MB GPX track (and its NMEA twin), beside Python's ElementTree.
    Track(track::Args),
    /// Small uploads' ack latency as history grows, uploads/s, and the
    /// commits and files the tables are left with.
    Lake(lake::Args),
    /// Honest devices' ack latency alone and under every issue-14 attack at
    /// once, and the server's peak RSS.
    Abuse(abuse::Args),
}

pub async fn run(which: Which) -> Result<()> {
    match which {
        Which::Ingest(args) => ingest::run(args).await,
        Which::Vision(args) => vision::run(args).await,
        Which::Sql(args) => sql::run(args).await,
        Which::Tiles(args) => tiles::run(args).await,
        Which::Epoch(args) => epoch::run(args).await,
        Which::Track(args) => track::run(args).await,
        Which::Abuse(args) => abuse::run(args).await,
        Which::Lake(args) => lake::run(args).await,
    }
}
