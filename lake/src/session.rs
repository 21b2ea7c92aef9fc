//! DataFusion sessions over the tables: at the latest versions, or as they
//! were at a moment (Delta time travel), with the public schemas, the H3
//! functions and the analyst views registered.

use std::sync::Arc;

use deltalake::datafusion::execution::cache::cache_manager::CacheManagerConfig;
use deltalake::datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};

use crate::schema::{self, TableName};
use crate::{Error, Lake, Result};

/// The settings of every session over the tables. Filters are pushed into
/// the Parquet scan, so rows a filter drops are never decoded. Text is
/// asked for as plain UTF-8, the type the public schemas give it, rather
/// than as string views that the public schema's cast copies again (files
/// whose embedded Arrow schema says views, as compaction writes them, are
/// still decoded as views and cast in the scan).
pub(crate) fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new();
    let parquet = &mut config.options_mut().execution.parquet;
    parquet.schema_force_view_types = false;
    parquet.pushdown_filters = true;
    // Only `uploads` carries bloom filters, on keys that only its point
    // lookups ask for (`lookup_session`): elsewhere, looking for them per
    // row group is work for nothing.
    parquet.bloom_filter_on_read = false;
    config
}

/// Parquet footers and page indexes kept per lake, bytes: a few hundred
/// files' worth, read once instead of at every query.
const METADATA_CACHE_BYTES: usize = 64 << 20;

/// The runtime a lake's sessions share, for its cache of file metadata.
pub(crate) fn shared_runtime() -> Result<Arc<RuntimeEnv>> {
    Ok(RuntimeEnvBuilder::new()
        .with_cache_manager(metadata_cache(None))
        .build_arc()?)
}

/// Caches that keep file metadata in `shared` (a lake's), or in a new cache.
pub(crate) fn metadata_cache(shared: Option<&RuntimeEnv>) -> CacheManagerConfig {
    let config = CacheManagerConfig::default().with_metadata_cache_limit(METADATA_CACHE_BYTES);
    match shared {
        Some(runtime) => {
            config.with_file_metadata_cache(Some(runtime.cache_manager.get_file_metadata_cache()))
        }
        None => config,
    }
}

impl Lake {
    /// A plain session with [`session_config`], on the lake's runtime.
    pub(crate) fn new_session(&self) -> SessionContext {
        SessionContext::new_with_config_rt(session_config(), Arc::clone(&self.runtime))
    }
}

impl Lake {
    /// A DataFusion session with every table registered under its name, at
    /// the latest committed version. `gnss.cell` is presented as `UInt64`.
    pub async fn session(&self) -> Result<SessionContext> {
        Ok(self.session_with_versions().await?.0)
    }

    /// A session over the latest versions, and those versions.
    pub(crate) async fn session_with_versions(
        &self,
    ) -> Result<(SessionContext, Vec<(TableName, u64)>)> {
        let ctx = self.new_session();
        crate::h3sql::register(&ctx);
        let versions = self.register_tables_as_of(&ctx, None).await?;
        Ok((ctx, versions))
    }

    /// Registers every table, freshly loaded, in an existing session.
    pub async fn register_tables(&self, ctx: &SessionContext) -> Result<()> {
        self.register_tables_as_of(ctx, None).await.map(|_| ())
    }

    /// A session over every table as it was at `at`: each table at its
    /// latest version committed at or before then (Delta time travel), so
    /// later commits never change what it answers. Returns the versions.
    pub async fn session_as_of(
        &self,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(SessionContext, Vec<(TableName, u64)>)> {
        let ctx = self.new_session();
        crate::h3sql::register(&ctx);
        let versions = self.register_tables_as_of(&ctx, Some(at)).await?;
        Ok((ctx, versions))
    }

    async fn register_tables_as_of(
        &self,
        ctx: &SessionContext,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<(TableName, u64)>> {
        let mut versions = Vec::new();
        // The scans follow the session's settings; the state shares the
        // session's runtime, where each table registers its store.
        let session = Arc::new(ctx.state());
        for name in TableName::ALL {
            let table = match at {
                None => self.latest(name).await?,
                Some(at) => self.table_as_of(name, at).await?,
            };
            versions.push((name, table.version().unwrap_or(0)));
            register(ctx, &session, name, &table).await?;
        }
        for (name, sql) in crate::views::VIEWS {
            let view = ctx.sql(sql).await?.into_view();
            ctx.register_table(*name, view)?;
        }
        Ok(versions)
    }
}

/// Registers `table` in `ctx` under its name, with its public schema.
async fn register(
    ctx: &SessionContext,
    session: &Arc<deltalake::datafusion::execution::SessionState>,
    name: TableName,
    table: &deltalake::DeltaTable,
) -> Result<()> {
    table
        .update_datafusion_session(session.as_ref())
        .map_err(Error::delta(name))?;
    let provider = table
        .table_provider()
        .with_session(Arc::clone(session))
        .await?;
    let frame = ctx.read_table(provider)?;
    let public = schema::schema(name);
    let exprs: Vec<_> = public
        .fields()
        .iter()
        .map(|f| {
            deltalake::datafusion::prelude::cast(
                deltalake::datafusion::prelude::col(f.name()),
                f.data_type().clone(),
            )
            .alias(f.name())
        })
        .collect();
    let view = frame.select(exprs)?.into_view();
    ctx.register_table(name.as_str(), view)?;
    Ok(())
}

impl Lake {
    /// A session over `table` alone, at its latest version, that consults
    /// the Parquet bloom filters: for point lookups by a key the filters
    /// cover (`reads/uploads.rs`), where they skip every row group that
    /// cannot hold it.
    pub(crate) async fn lookup_session(&self, name: TableName) -> Result<SessionContext> {
        let mut config = session_config();
        config.options_mut().execution.parquet.bloom_filter_on_read = true;
        let ctx = SessionContext::new_with_config_rt(config, Arc::clone(&self.runtime));
        let session = Arc::new(ctx.state());
        let table = self.latest(name).await?;
        register(&ctx, &session, name, &table).await?;
        Ok(ctx)
    }
}

impl Lake {
    /// `table` as it was at `at`: its latest version committed by then. A
    /// table created after `at` (an older lake gaining a new table) was
    /// empty then: its creation, version 0.
    async fn table_as_of(
        &self,
        name: TableName,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<deltalake::DeltaTable> {
        let mut table = self.tables[name.index()].lock().await.clone();
        match table.load_with_datetime(at).await {
            Ok(()) => committed_by(&table, name, at).await?,
            Err(e) => table
                .load_version(0)
                .await
                .map_err(|_| Error::delta(name)(e))?,
        }
        Ok(table)
    }
}

/// Delta's time travel falls back to the oldest version it still has when
/// the log from `at` was cleaned up; that state is a later one, and an
/// epoch must never be read from it. The version loaded must have been
/// committed by `at` (its creation excepted).
async fn committed_by(
    table: &deltalake::DeltaTable,
    name: TableName,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let version = table.version().unwrap_or(0);
    if version == 0 {
        // The table's creation, empty: what it held at `at` even when it
        // was created later (an older lake gaining a table).
        return Ok(());
    }
    let commit = object_store::path::Path::from(format!("_delta_log/{version:020}.json"));
    let store = table.log_store().object_store(None);
    use object_store::ObjectStoreExt;
    match store.head(&commit).await {
        Ok(meta) if meta.last_modified <= at => Ok(()),
        // The commit is later than `at` (the oldest one kept), or gone.
        Ok(_) | Err(object_store::Error::NotFound { .. }) => Err(Error::HistoryExpired {
            table: name.as_str(),
            at,
        }),
        Err(e) => Err(Error::blob(&commit)(e)),
    }
}
