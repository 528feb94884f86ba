//! JSON object bodies whose field names match case-insensitively, as the
//! original Go server's did: `username`, `Username` and `USERNAME` are one
//! field. Request types name their fields in lower case.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Error;

/// A JSON object read into `T`, its field names in lower case; when a name
/// comes in several spellings, the last one wins. Anything else (invalid
/// JSON, another kind of value, a field of the wrong type) is
/// [`Error::Malformed`].
pub fn parse_case_insensitive<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let value: Value = serde_json::from_slice(bytes).map_err(|_| malformed("invalid json"))?;
    let Value::Object(fields) = value else {
        return Err(malformed("the request body must be a JSON object"));
    };
    let fields: Map<String, Value> =
        fields.into_iter().map(|(name, value)| (name.to_lowercase(), whole_number_as_integer(value))).collect();
    T::deserialize(Value::Object(fields)).map_err(|error| malformed(format!("invalid request: {error}")))
}

fn malformed(message: impl Into<String>) -> Error {
    Error::Malformed(message.into())
}

/// JSON Schema, and so the OpenAPI document, counts `3.0` as the integer 3,
/// which serde reads as a float that no integer field takes; such a number
/// is read as the integer it is. Past 2^53 a float no longer tells
/// neighbouring integers apart, so those stay floats and are refused.
fn whole_number_as_integer(value: Value) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value.as_f64() {
        Some(number) if value.is_f64() && number.fract() == 0.0 && number.abs() <= EXACT => Value::from(number as i64),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Login {
        email: String,
        roomid: i64,
    }

    #[test]
    fn field_names_match_in_any_case_and_unknown_ones_are_ignored() {
        for body in [
            r#"{"Email":"a@b.co","RoomID":3}"#,
            r#"{"email":"a@b.co","roomid":3,"extra":[1]}"#,
            r#"{"EMAIL":"a@b.co","ROOMID":3}"#,
        ] {
            let login: Login = parse_case_insensitive(body.as_bytes()).unwrap();
            assert_eq!(login, Login { email: "a@b.co".into(), roomid: 3 }, "{body}");
        }
    }

    #[test]
    fn whole_numbers_are_integers_however_spelled() {
        for body in [r#"{"RoomID":3}"#, r#"{"RoomID":3.0}"#, r#"{"RoomID":0.3e1}"#] {
            let login: Login = parse_case_insensitive(body.as_bytes()).unwrap();
            assert_eq!(login.roomid, 3, "{body}");
        }
        for body in [r#"{"RoomID":3.5}"#, r#"{"RoomID":1e300}"#, r#"{"Email":1.0}"#] {
            let error = parse_case_insensitive::<Login>(body.as_bytes()).unwrap_err();
            assert!(matches!(error, Error::Malformed(_)), "{body}");
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in ["", "{", "[1,2]", "\"text\"", "null", r#"{"RoomID":"three"}"#, r#"{"RoomID":1.5}"#] {
            let error = parse_case_insensitive::<Login>(body.as_bytes()).unwrap_err();
            assert!(matches!(error, Error::Malformed(_)), "{body}");
        }
        let error = parse_case_insensitive::<Login>(b"[1]").unwrap_err();
        assert_eq!(error.to_string(), "the request body must be a JSON object");
    }
}
