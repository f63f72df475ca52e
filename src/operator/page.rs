//! Cursor pagination for every operator list: a page holds at most [`MAX_LIMIT`] items and,
//! when more follow, an opaque cursor that names the last item shown (keyset pagination, so a
//! page never shifts when rows arrive, and nothing loads an unbounded result).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::error::{OperatorError, Result};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }

    /// The position the cursor names, as the list module wrote it.
    pub fn position(&self) -> Result<Option<String>> {
        self.cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(decode)
            .transpose()
    }
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass it back as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only says that more follow.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, position: impl Fn(&T) -> String) -> Page<T> {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(|last| encode(&position(last)))
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

fn encode(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position.as_bytes())
}

fn decode(cursor: &str) -> Result<String> {
    URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| OperatorError::Invalid(format!("{cursor:?} is not a cursor from this list")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_keeps_limit_rows_and_points_past_the_last() {
        let page = Page::from_rows(vec![5, 4, 3], 2, |n| n.to_string());
        assert_eq!(page.items, vec![5, 4]);
        let req = PageRequest {
            limit: None,
            cursor: page.next_cursor,
        };
        assert_eq!(req.position().ok().flatten().as_deref(), Some("4"));
        let last = Page::from_rows(vec![1], 2, |n| n.to_string());
        assert!(last.next_cursor.is_none());
    }

    #[test]
    fn limits_are_clamped_and_bad_cursors_refused() {
        let req = |limit| PageRequest {
            limit,
            cursor: None,
        };
        assert_eq!(req(None).limit(), DEFAULT_LIMIT);
        assert_eq!(req(Some(0)).limit(), 1);
        assert_eq!(req(Some(10_000)).limit(), MAX_LIMIT);
        let bad = PageRequest {
            limit: None,
            cursor: Some("!!".into()),
        };
        assert!(bad.position().is_err());
    }
}
