//! Keyset pagination: `?limit=` and an opaque `?cursor=`, answered as `{items, next_cursor}`.

use serde::Serialize;

use crate::{Error, FieldError};

/// Default and maximum page sizes (docs/api.md, "Conventions").
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// One page of a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The position after which the next page starts: the sort key of the last item seen.
/// Encoded as `c1.<key>` so that a malformed cursor is told apart from one that simply
/// matches nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(pub String);

impl Cursor {
    pub fn encode(key: &str) -> String {
        format!("c1.{key}")
    }

    pub fn parse(raw: &str) -> Result<Self, Error> {
        raw.strip_prefix("c1.")
            .filter(|k| !k.is_empty() && k.len() <= 100 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .map(|k| Cursor(k.to_owned()))
            .ok_or_else(|| Error::validation(vec![FieldError::new("cursor", "is not a cursor this API gave out")]))
    }
}

/// A validated `limit` and `cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<Cursor>,
}

impl PageRequest {
    pub fn parse(limit: Option<i64>, cursor: Option<&str>) -> Result<Self, Error> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(l) if (1..=i64::from(MAX_LIMIT)).contains(&l) => l as u32,
            Some(_) => {
                return Err(Error::validation(vec![FieldError::new(
                    "limit",
                    format!("must be between 1 and {MAX_LIMIT}"),
                )]));
            }
        };
        let after = cursor.map(Cursor::parse).transpose()?;
        Ok(Self { limit, after })
    }

    /// Turns `limit + 1` fetched rows into a page: the extra row only tells that more exist.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> String) -> Page<T> {
        let more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        let next_cursor = if more { rows.last().map(|r| Cursor::encode(&key(r))) } else { None };
        Page { items: rows, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_cursors_are_checked() {
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, 20);
        assert!(PageRequest::parse(Some(101), None).is_err());
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(5), Some("garbage")).is_err());
        let p = PageRequest::parse(Some(2), Some("c1.prod_01abc")).unwrap();
        assert_eq!(p.after, Some(Cursor("prod_01abc".into())));
        let page = p.finish(vec![1, 2, 3], |n| format!("k{n}"));
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next_cursor.as_deref(), Some("c1.k2"));
        let last = p.finish(vec![1, 2], |n| format!("k{n}"));
        assert_eq!(last.next_cursor, None);
    }
}
