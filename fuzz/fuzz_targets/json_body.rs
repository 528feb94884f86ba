//! The case-insensitive JSON extractor of request bodies
//! (`parse_case_insensitive`), into a type with a field of each kind the
//! requests use: it never panics, accepts only JSON objects, and reads a
//! field whatever the case of its name.
#![no_main]

use client_input::json::parse_case_insensitive;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;

#[derive(Default, Deserialize)]
#[serde(default)]
struct Probe {
    roomid: i64,
    uid: Option<i64>,
    text: Option<String>,
    isprivate: bool,
    limit: Option<u32>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(probe) = parse_case_insensitive::<Probe>(data) else { return };
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(data) else {
        panic!("accepted a body that is not a JSON object");
    };
    // A field named in any case is the field (the last spelling wins when
    // several are given).
    if let Some((_, Value::String(text))) = fields.iter().rfind(|(name, _)| name.to_lowercase() == "text") {
        assert_eq!(probe.text.as_deref(), Some(text.as_str()));
    }
    let _ = (probe.roomid, probe.uid, probe.isprivate, probe.limit);
});
