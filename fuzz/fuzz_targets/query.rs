//! A query string as the history and search endpoints read it: axum's
//! `Query` of a request URI, then the gateway's case-insensitive
//! `QueryParams` with its `LastID` and `Limit` rules. Never a panic; what
//! passes is within the contract's bounds.
#![no_main]

use std::collections::HashMap;

use axum::{extract::Query, http::Uri};
use gateway::routes::QueryParams;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let Ok(uri) = format!("/search?{query}").parse::<Uri>() else { return };
    let Ok(parsed) = Query::<HashMap<String, String>>::try_from_uri(&uri) else { return };
    let params = QueryParams::new(parsed);
    if let Ok(Some(last_id)) = params.number(&["lastid", "last_id"], "LastID") {
        assert!(last_id >= 0);
    }
    if let Ok(limit) = params.limit() {
        assert!(limit <= 100);
    }
    let _ = params.text(&["q"]);
});
