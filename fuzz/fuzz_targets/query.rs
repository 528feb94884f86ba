//! A query string as the history and search endpoints read it
//! (`QueryParams`: percent-decoded, names case-insensitive, with the
//! `LastID` and `Limit` rules). Never a panic; what passes is within the
//! contract's bounds.
#![no_main]

use client_input::query::QueryParams;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The router hands over the query as text (a URI is ASCII); any UTF-8
    // is tried here.
    let Ok(query) = std::str::from_utf8(data) else { return };
    let params = QueryParams::parse(query);
    if let Ok(Some(last_id)) = params.number(&["lastid", "last_id"], "LastID") {
        assert!(last_id >= 0);
    }
    if let Ok(limit) = params.limit() {
        assert!(limit <= 100);
    }
    let _ = params.text(&["q"]);
});
