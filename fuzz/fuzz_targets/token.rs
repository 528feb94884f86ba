//! Token parsing: an `Authorization` value as the gateway takes it
//! (`authorization`, and the unverified expiry it reads for a socket's
//! lifetime) and as core-svc verifies it (`TokenKeys::verify_header`). None
//! panics, and no input the fuzzer makes verifies: a valid token needs the
//! secret (so `alg: none` and the like are refused whatever their claims).
#![no_main]

use client_input::token::{TokenKeys, authorization, unverified_expiry};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzzing secret 0123456789abcdef0";

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else { return };
    if let Ok(accepted) = authorization(value) {
        assert!(!accepted.is_empty() && accepted.is_ascii(), "{accepted:?} is no header value");
        let _ = unverified_expiry(accepted);
    }
    let keys = TokenKeys::new(SECRET);
    assert!(keys.verify_header(Some(value)).is_err(), "verified a token the fuzzer made");
    // A token the keys issued verifies, to its user.
    if let Some(bytes) = data.get(..8) {
        let uid = i64::from_le_bytes(bytes.try_into().expect("8 bytes"));
        let issued = keys.issue(uid, chrono::Duration::hours(1));
        let verified = keys.verify(&issued.token).map(|v| v.uid);
        assert_eq!(verified.ok(), (uid > 0).then_some(uid));
    }
});
