//! A request's query parameters, their names matched case-insensitively as
//! a body's fields are.

use std::collections::HashMap;

use crate::Error;

/// The parameters of a query string (what follows the `?`, still
/// percent-encoded), names in lower case. When a name comes more than once,
/// in any spelling, the last one wins.
pub struct QueryParams(HashMap<String, String>);

impl QueryParams {
    pub fn parse(query: &str) -> Self {
        let pairs = form_urlencoded::parse(query.as_bytes());
        Self(pairs.map(|(name, value)| (name.to_lowercase(), value.into_owned())).collect())
    }

    /// The value of the first of `names` (lower case) that is present.
    pub fn text(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|name| self.0.get(*name)).map(String::as_str)
    }

    /// A number that is not negative; `invalid <what>` otherwise.
    pub fn number(&self, names: &[&str], what: &str) -> Result<Option<i64>, Error> {
        self.text(names)
            .map(|value| {
                value.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| Error::Malformed(format!("invalid {what}")))
            })
            .transpose()
    }

    /// `Limit`, 1 to 100; 0 (core-svc's default, 100) when absent.
    pub fn limit(&self) -> Result<u32, Error> {
        match self.number(&["limit"], "Limit")? {
            None => Ok(0),
            Some(limit @ 1..=100) => Ok(limit as u32),
            Some(_) => Err(Error::Malformed("Limit must be 1 to 100".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_in_any_case_and_values_are_decoded() {
        let params = QueryParams::parse("Q=hello%20w%C3%B6rld+again&LASTID=40&limit=5");
        assert_eq!(params.text(&["q"]), Some("hello wörld again"));
        assert_eq!(params.number(&["lastid", "last_id"], "LastID"), Ok(Some(40)));
        assert_eq!(params.limit(), Ok(5));
        assert_eq!(QueryParams::parse("last_id=7").number(&["lastid", "last_id"], "LastID"), Ok(Some(7)));
        assert_eq!(QueryParams::parse("limit=5&LIMIT=7").limit(), Ok(7), "the last spelling wins");
    }

    #[test]
    fn absent_numbers_are_none_and_bad_ones_are_refused() {
        let empty = QueryParams::parse("");
        assert_eq!((empty.number(&["lastid"], "LastID"), empty.limit()), (Ok(None), Ok(0)));
        for bad in ["lastid=-1", "lastid=x", "lastid=", "lastid=1.5"] {
            let error = QueryParams::parse(bad).number(&["lastid"], "LastID").unwrap_err();
            assert_eq!(error, Error::Malformed("invalid LastID".into()), "{bad}");
        }
        for bad in ["limit=0", "limit=101"] {
            assert_eq!(QueryParams::parse(bad).limit(), Err(Error::Malformed("Limit must be 1 to 100".into())));
        }
    }
}
