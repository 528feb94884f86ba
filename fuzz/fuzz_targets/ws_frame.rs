//! A WebSocket text frame from a client, as the gateway parses it before
//! acting on it (`ClientFrame::parse`): it never panics, and what it
//! accepts keeps the contract's `Ref` bound.
#![no_main]

use client_input::frame::{ClientFrame, MAX_REF};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 by the time the gateway reads them (the
    // WebSocket layer refuses others).
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(frame) = ClientFrame::parse(text) {
        assert!(frame.reference.is_none_or(|r| r.chars().count() <= MAX_REF));
    }
});
