//! Cursor pagination of list endpoints: the contract's `limit` (default 50, at most 1000),
//! `cursor` and `sort=field:asc|desc` in, and its `pagination` object out.

use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiError;

/// The default page size.
pub const DEFAULT_LIMIT: usize = 50;

/// The largest page.
pub const MAX_LIMIT: usize = 1000;

/// A list's paging parameters.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct PageQuery {
    /// Items per page (1–1000, default 50).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<usize>,
    /// Where to continue: a `next_cursor` or `prev_cursor` of an earlier page (a position in
    /// the sorted list; one past the end gives an empty page).
    #[schemars(pattern(r"^[0-9]{1,9}$"))]
    pub cursor: Option<String>,
    /// `field:asc` or `field:desc` (`:asc` if left out).
    #[schemars(pattern(
        r"^(node_id|name|location|status|last_seen|registered_at)(:(asc|desc))?$"
    ))]
    pub sort: Option<String>,
}

/// A cursor: the position in the sorted list.
fn encode(offset: usize) -> String {
    offset.to_string()
}

fn decode(cursor: &str) -> Option<usize> {
    (cursor.len() <= 9 && cursor.bytes().all(|b| b.is_ascii_digit()))
        .then(|| cursor.parse().ok())
        .flatten()
}

/// One page of `items`, sorted by `q.sort` (one of `fields`, `default` when absent; `key`
/// gives an item's value of a field), with its `pagination` object.
pub fn page<T>(
    mut items: Vec<T>,
    q: &PageQuery,
    fields: &[&str],
    default: &str,
    key: impl Fn(&T, &str) -> Value,
) -> Result<(Vec<T>, Value), ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidParameter(format!(
            "limit must be 1-{MAX_LIMIT}, got {limit}"
        )));
    }
    let sort = q.sort.as_deref().unwrap_or(default);
    let (field, dir) = sort.split_once(':').unwrap_or((sort, "asc"));
    if !fields.contains(&field) || !matches!(dir, "asc" | "desc") {
        return Err(ApiError::InvalidParameter(format!(
            "sort {sort:?}: one of {} followed by :asc or :desc",
            fields.join(", ")
        )));
    }
    let offset = match q.cursor.as_deref() {
        None => 0,
        Some(c) => decode(c).ok_or_else(|| {
            ApiError::InvalidParameter(format!("cursor {c:?} is not one this API gave out"))
        })?,
    };
    let order = |a: &T, b: &T| {
        let (x, y) = (key(a, field), key(b, field));
        let o = match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => x.to_string().cmp(&y.to_string()),
        };
        if dir == "desc" {
            o.reverse()
        } else {
            o
        }
    };
    items.sort_by(order);
    let total = items.len();
    let start = offset.min(total);
    let end = (start + limit).min(total);
    let has_next = end < total;
    let has_prev = start > 0;
    let pagination = json!({
        "has_next": has_next,
        "has_prev": has_prev,
        "next_cursor": has_next.then(|| encode(end)),
        "prev_cursor": has_prev.then(|| encode(start.saturating_sub(limit))),
        "total_count": total,
        "limit": limit,
        "sort": format!("{field}:{dir}"),
    });
    let items = items.into_iter().skip(start).take(end - start).collect();
    Ok((items, pagination))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(limit: usize, cursor: Option<String>, sort: &str) -> PageQuery {
        PageQuery {
            limit: Some(limit),
            cursor,
            sort: Some(sort.into()),
        }
    }

    #[test]
    fn pages_walk_the_sorted_list_forwards_and_back() {
        let items: Vec<u32> = vec![5, 3, 9, 1, 7];
        let key = |x: &u32, _: &str| json!(x);
        let (p1, m1) = page(items.clone(), &q(2, None, "n:desc"), &["n"], "n", key).unwrap();
        assert_eq!(p1, vec![9, 7]);
        assert_eq!(m1["has_prev"], false);
        assert_eq!(m1["total_count"], 5);
        let next = m1["next_cursor"].as_str().unwrap().to_string();
        let (p2, m2) = page(items.clone(), &q(2, Some(next), "n:desc"), &["n"], "n", key).unwrap();
        assert_eq!(p2, vec![5, 3]);
        let next = m2["next_cursor"].as_str().unwrap().to_string();
        let (p3, m3) = page(items.clone(), &q(2, Some(next), "n:desc"), &["n"], "n", key).unwrap();
        assert_eq!(p3, vec![1]);
        assert_eq!(m3["has_next"], false);
        assert!(m3["next_cursor"].is_null());
        let prev = m3["prev_cursor"].as_str().unwrap().to_string();
        let (back, _) = page(items, &q(2, Some(prev), "n:desc"), &["n"], "n", key).unwrap();
        assert_eq!(back, vec![5, 3]);
    }

    #[test]
    fn bad_limits_sorts_and_cursors_are_refused() {
        let key = |x: &u32, _: &str| json!(x);
        for bad in [
            q(0, None, "n"),
            q(1001, None, "n"),
            q(5, None, "colour:asc"),
            q(5, None, "n:sideways"),
            q(5, Some("bm9wZQ".into()), "n"),
            q(5, Some("-1".into()), "n"),
        ] {
            assert!(page(vec![1u32], &bad, &["n"], "n", key).is_err(), "{bad:?}");
        }
    }
}
