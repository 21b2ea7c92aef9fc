//! Arrow Flight SQL over the lake, so ADBC, JDBC and BI tools can connect.
//!
//! Stateless: a statement's ticket and a prepared statement's handle are the
//! SQL text itself, so any number of servers can answer the same client and
//! nothing has to be closed or expired. Every query runs through
//! [`Lake::query_read_only`], with the same refusals and limits as
//! `POST /v1/sql`, reported as gRPC statuses.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, ProstMessageExt, SqlInfo, SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{Stream, TryStreamExt};
use hexroad_lake::arrow::array::RecordBatch;
use hexroad_lake::arrow::datatypes::{Schema, SchemaRef};
use hexroad_lake::arrow::ipc::writer::IpcWriteOptions;
use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use hexroad_lake::{Error, Lake, Refusal, Role};

use crate::http::SqlService;

/// The one catalog and schema every table and view is in (DataFusion's
/// defaults, so `datafusion.public.frames` also names a table).
const CATALOG: &str = "datafusion";
const DB_SCHEMA: &str = "public";

/// The Flight SQL service over one lake.
pub struct FlightSql {
    lake: Arc<Lake>,
    service: SqlService,
    info: SqlInfoData,
}

impl FlightSql {
    pub fn new(lake: Arc<Lake>, service: SqlService) -> Result<Self, Error> {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "hexroad");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(
            SqlInfo::FlightSqlServerTransaction,
            SqlSupportedTransaction::None as i32,
        );
        info.append(SqlInfo::FlightSqlServerCancel, false);
        info.append(
            SqlInfo::FlightSqlServerStatementTimeout,
            i32::try_from(service.limits.timeout.as_millis()).unwrap_or(i32::MAX),
        );
        info.append(SqlInfo::SqlDdlCatalog, false);
        info.append(SqlInfo::SqlDdlSchema, false);
        info.append(SqlInfo::SqlDdlTable, false);
        let info = info
            .build()
            .map_err(|e| Error::Internal(format!("Flight SQL server info: {e}")))?;
        Ok(Self {
            lake,
            service,
            info,
        })
    }

    /// The gRPC service, refusing calls whose credentials are not the
    /// operator's token; calls without credentials are the public's.
    pub fn into_server(
        self,
    ) -> tonic::service::interceptor::InterceptedService<
        FlightServiceServer<Self>,
        impl tonic::service::Interceptor + Clone,
    > {
        let service = self.service.clone();
        let check = move |request: Request<()>| -> Result<Request<()>, Status> {
            if role_of(&service, request.metadata()).is_some() {
                Ok(request)
            } else {
                Err(Status::unauthenticated(
                    "the credentials are not the operator's: send the server's sql.token as \
                     `authorization: Bearer <token>` or as the basic-auth password, \
                     or nothing for the public views",
                ))
            }
        };
        FlightServiceServer::with_interceptor(self, check)
    }

    fn flight_info(
        &self,
        schema: &Schema,
        ticket: Any,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket.encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("encoding the schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// The caller's role (the interceptor has refused wrong credentials).
    fn role(&self, metadata: &MetadataMap) -> Result<Role, Status> {
        role_of(&self.service, metadata)
            .ok_or_else(|| Status::unauthenticated("the credentials are not the operator's"))
    }

    async fn schema_of(&self, sql: &str, role: Role) -> Result<SchemaRef, Status> {
        self.lake
            .schema_read_only(sql, &self.service.limits, role)
            .await
            .map_err(|e| status(&e))
    }

    async fn answer(&self, sql: &str, role: Role) -> Result<Response<DoGetStream>, Status> {
        let output = self
            .service
            .pool
            .query(&self.lake, sql, &self.service.limits, role)
            .await
            .map_err(|busy| Status::resource_exhausted(format!("too_many_queries: {busy}")))?
            .map_err(|e| status(&e))?;
        Ok(stream_batches(output.schema, output.batches))
    }

    /// Every table and view `role` may name, with its columns.
    async fn tables(&self, role: Role) -> Result<Vec<(String, &'static str, SchemaRef)>, Status> {
        self.lake.relations(role).await.map_err(|e| status(&e))
    }
}

type DoGetStream = <FlightSql as FlightService>::DoGetStream;

fn stream_batches(schema: SchemaRef, batches: Vec<RecordBatch>) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

fn one_batch(
    batch: Result<RecordBatch, arrow_flight::error::FlightError>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    Ok(stream_batches(batch.schema(), vec![batch]))
}

/// A query's error as a gRPC status whose message says what went wrong.
pub fn status(e: &Error) -> Status {
    let refusal = e.refusal();
    let message = format!("{}: {}", refusal.code(), e.full_message());
    match refusal {
        Refusal::ReadOnly => Status::permission_denied(message),
        Refusal::Timeout => Status::deadline_exceeded(message),
        Refusal::MemoryLimit | Refusal::ResultTooLarge => Status::resource_exhausted(message),
        Refusal::BadQuery => Status::invalid_argument(message),
        Refusal::Internal => {
            tracing::error!(error = %e.full_message(), "Flight SQL");
            Status::internal("internal: the query could not be run; see the server log")
        }
    }
}

fn sql_from(handle: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(handle)
        .map_err(|_| Status::invalid_argument("the statement handle is not UTF-8 SQL"))
}

/// The role of a call: public without `authorization`; operator with
/// `Bearer <token>` or `Basic` credentials whose password is the token;
/// `None` with anything else.
fn role_of(service: &SqlService, metadata: &MetadataMap) -> Option<Role> {
    let Some(value) = metadata.get("authorization") else {
        return service.role(None);
    };
    let value = value.to_str().ok()?;
    credentials_match(service, value).then_some(Role::Operator)
}

fn credentials_match(service: &SqlService, value: &str) -> bool {
    use base64::Engine;
    if let Some(bearer) = value.strip_prefix("Bearer ") {
        return service.token_matches(bearer);
    }
    if let Some(basic) = value.strip_prefix("Basic ") {
        // Padded or not: arrow-go's client leaves the padding off.
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(basic.trim().trim_end_matches('='))
            .ok()
            .and_then(|d| String::from_utf8(d).ok());
        return decoded
            .as_deref()
            .and_then(|d| d.split_once(':'))
            .is_some_and(|(_, password)| service.token_matches(password));
    }
    false
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    /// Basic auth (the interceptor has checked it) answered with the bearer
    /// token the client sends from then on.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        if self.role(request.metadata())? == Role::Operator
            && let Some(token) = &self.service.token
        {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::internal("the token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self
            .schema_of(&query.query, self.role(request.metadata())?)
            .await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        self.flight_info(&schema, ticket.as_any(), request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let role = self.role(request.metadata())?;
        self.answer(sql_from(&ticket.statement_handle)?, role).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let schema = self
            .schema_of(&query.query, self.role(request.metadata())?)
            .await?;
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: hexroad_lake::arrow::error::ArrowError| {
                Status::internal(format!("encoding the schema: {e}"))
            })?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema,
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        // Nothing is held for a prepared statement.
        Ok(())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self
            .schema_of(
                sql_from(&query.prepared_statement_handle)?,
                self.role(request.metadata())?,
            )
            .await?;
        self.flight_info(&schema, query.as_any(), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let role = self.role(request.metadata())?;
        self.answer(sql_from(&query.prepared_statement_handle)?, role)
            .await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.flight_info(&schema, query.as_any(), request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        one_batch(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.flight_info(&schema, query.as_any(), request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG, DB_SCHEMA);
        one_batch(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.flight_info(&schema, query.as_any(), request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tables = self.tables(self.role(request.metadata())?).await?;
        let mut builder = query.into_builder();
        for (name, kind, schema) in tables {
            builder
                .append(CATALOG, DB_SCHEMA, name, kind, &schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.flight_info(&schema, query.as_any(), request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append("TABLE");
        builder.append("VIEW");
        one_batch(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.info).schema();
        self.flight_info(&schema, query.as_any(), request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        one_batch(query.into_builder(&self.info).build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Serves Flight SQL on `listener` until `shutdown` completes.
pub async fn serve(
    lake: Arc<Lake>,
    service: SqlService,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let flight = FlightSql::new(lake, service)?;
    tonic::transport::Server::builder()
        .add_service(flight.into_server())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
