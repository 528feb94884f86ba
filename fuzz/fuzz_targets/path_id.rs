//! A path segment that should hold an id (`/room/{roomID}`,
//! `/messages/{roomID}/{messageID}`), as the gateway parses it after axum
//! has percent-decoded it (`positive_id`): never a panic, and only positive
//! ids get through.
#![no_main]

use client_input::path::positive_id;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    if let Ok(id) = positive_id(Some(&raw), "room") {
        assert!(id > 0, "{raw:?} gave {id}");
    }
});
