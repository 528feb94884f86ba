//! The REST API against real core-svc, PostgreSQL and Redis, each test on
//! its own freshly migrated database. One test binary, one module per
//! resource.

mod cache;
mod helpers;
mod hostile;
mod messages;
mod ops;
mod rooms;
mod users;
mod ws;
