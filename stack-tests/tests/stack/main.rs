//! The whole stack against the real PostgreSQL, Redis, NATS and Kafka, each
//! test with its own freshly migrated database: the REST API, the WebSocket
//! protocol and the gRPC API, one module per resource or protocol. One test
//! binary, so the stack is linked once.

mod archiver;
mod authorization;
mod cache;
mod changes;
mod cross;
mod direct;
mod grpc_messages;
mod grpc_rooms;
mod grpc_stream;
mod grpc_users;
mod hostile;
mod ids;
mod leaving;
mod limits;
mod messages;
mod ops;
mod outages;
mod presence;
mod read_state;
mod rooms;
mod search;
mod sends;
mod tokens;
mod trace_context;
mod typing;
mod users;
mod ws;
mod ws_auth;
