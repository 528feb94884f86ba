//! The schemas of the request fields that core-svc validates, stating what
//! its rules (`core-svc/src/domain.rs`) accept, so that a client or a fuzzer
//! can tell a valid request from the document alone. Lengths count Unicode
//! scalar values, as both JSON Schema and those rules do. The patterns are
//! ECMA-262 with Unicode semantics; they spell character sets out as ranges
//! where the rules use Rust's definitions, which no shorthand (`\s`) matches
//! in every engine.

use utoipa::openapi::{Object, ObjectBuilder, Type};

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).description(Some(description))
}

/// `char::is_alphanumeric` is Unicode's Alphabetic property or a number.
pub fn username() -> Object {
    string("3–20 letters (of any script), digits or `_`.")
        .min_length(Some(3))
        .max_length(Some(20))
        .pattern(Some(r"^[\p{Alpha}\p{N}_]{3,20}$"))
        .build()
}

/// Surrounding white space (what `str::trim` removes:
/// `[\t-\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]`) is
/// dropped; the rest is a local part of 1–64 non-space characters other than
/// `@`, then labels separated by dots, at least two, none empty or starting
/// or ending with `-`, 254 characters in all (the lookahead). The pattern
/// admits ASCII addresses only: the server's limits count UTF-8 bytes,
/// which a JSON Schema cannot state for other characters.
pub fn email() -> Object {
    string(
        "`local@domain.tld`, compared ignoring case. Surrounding white space is ignored. At most 64 bytes \
         before the `@` and 254 in all; the pattern covers ASCII addresses, and others of the same shape \
         within those byte limits are accepted too.",
    )
    .pattern(Some(concat!(
        r"^[\t-\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*",
        r"(?=[!-~]{1,254}[\t-\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$)",
        r"[!-?A-~]{1,64}@",
        r"[!-,/-?A-~](?:[!-\-/-?A-~]*[!-,/-?A-~])?",
        r"(?:\.[!-,/-?A-~](?:[!-\-/-?A-~]*[!-,/-?A-~])?)+",
        r"[\t-\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$",
    )))
    .build()
}

pub fn password() -> Object {
    string("8–128 characters.").min_length(Some(8)).max_length(Some(128)).build()
}

/// After the surrounding white space (as for [`email`]) come 1–100
/// characters, the first and last not white space, none a control
/// character (`\x00-\x1F\x7F-\x9F`).
pub fn room_name() -> Object {
    string("1–100 characters after trimming surrounding white space, no control characters; unique, ignoring case.")
        .pattern(Some(concat!(
            r"^[\t-\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*",
            r"[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]",
            r"(?:[^\x00-\x1F\x7F-\x9F]{0,98}[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?",
            r"[\t-\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$",
        )))
        .build()
}

/// What `MessageText::parse` accepts: 1–2000 characters, not only white
/// space (the lookahead finds one that is not), no control characters but
/// newline and tab.
pub fn message_text() -> Object {
    string("1–2000 characters, not only white space, no control characters other than newline and tab.")
        .min_length(Some(1))
        .max_length(Some(2000))
        .pattern(Some(concat!(
            r"^(?=[^\x00-\x08\x0B-\x1F\x7F-\x9F]*",
            r"[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])",
            r"[^\x00-\x08\x0B-\x1F\x7F-\x9F]{1,2000}$",
        )))
        .build()
}

/// At most 32 bytes of UTF-8, which no JSON Schema length states: 32
/// characters bound it from above, and the server counts the bytes.
pub fn emoji() -> Object {
    string("An emoji (any text): 1 to 32 bytes of UTF-8, not only white space, no control characters.")
        .min_length(Some(1))
        .max_length(Some(32))
        .pattern(Some(concat!(
            r"^(?=[^\x00-\x1F\x7F-\x9F]*",
            r"[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])",
            r"[^\x00-\x1F\x7F-\x9F]{1,32}$",
        )))
        .build()
}
