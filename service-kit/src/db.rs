//! Client spans of the calls to PostgreSQL and Redis, by the OpenTelemetry
//! database conventions: named by a summary of the statement (`SELECT
//! messages`) or the command (`EVALSHA`), never carrying a statement's
//! text, a key or a value (keys name users' e-mail addresses). A call made
//! outside any span (a background probe, a lease renewal) gets none: it
//! would be a trace of its own, every few seconds, telling nothing.

use tracing::Span;

/// The span of a PostgreSQL statement summarised as `summary`: its
/// operation, then the table it works on (`INSERT room_members`).
pub fn postgres(summary: &'static str) -> Span {
    if Span::current().is_none() {
        return Span::none();
    }
    let (operation, table) = summary.split_once(' ').map_or((summary, None), |(op, table)| (op, Some(table)));
    tracing::info_span!(
        "postgresql",
        otel.name = summary,
        otel.kind = "client",
        db.system.name = "postgresql",
        db.system = "postgresql",
        db.operation.name = operation,
        db.collection.name = table,
        db.query.summary = summary,
    )
}

/// The span of a Redis command (or `PIPELINE`, or `EVALSHA` for a script).
pub fn redis(command: &'static str) -> Span {
    if Span::current().is_none() {
        return Span::none();
    }
    tracing::info_span!(
        "redis",
        otel.name = command,
        otel.kind = "client",
        db.system.name = "redis",
        db.system = "redis",
        db.operation.name = command,
    )
}
