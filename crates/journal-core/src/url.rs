//! The journal's own URL parameters, one grammar for every backend and the
//! `journal` command: `postgres://..?schema=NAME`, `redis://..?prefix=P`
//! (on every node of a node list). A backend takes its parameter out with
//! [`take_param`] before its driver reads the rest, which rejects what it
//! does not know.

/// Removes the query parameter `name` from every node of `url` (a
/// comma-separated node list included), returning the URL without it and
/// its last value. The query starts at the first `?` after the
/// credentials (a password may hold `?`, `,` or `@`), and the value is
/// taken as written (no percent-decoding: names and prefixes are plain).
///
/// ```
/// use journal_core::url::take_param;
/// assert_eq!(
///     take_param("postgres://u:p?w@db/j?schema=app&sslmode=require", "schema"),
///     ("postgres://u:p?w@db/j?sslmode=require".to_owned(), Some("app".to_owned()))
/// );
/// assert_eq!(take_param("redis://a:1", "prefix"), ("redis://a:1".to_owned(), None));
/// ```
pub fn take_param(url: &str, name: &str) -> (String, Option<String>) {
    let mut value = None;
    let nodes: Vec<String> = nodes(url)
        .into_iter()
        .map(|node| {
            let Some(start) = query_start(&node) else {
                return node;
            };
            let (base, query) = (&node[..start], &node[start + 1..]);
            let (query, fragment) = match query.split_once('#') {
                Some((query, fragment)) => (query, Some(fragment)),
                None => (query, None),
            };
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| match pair.split_once('=') {
                    Some((key, v)) if key == name => {
                        value = Some(v.to_owned());
                        false
                    }
                    _ => !pair.is_empty(),
                })
                .collect();
            let mut out = base.to_owned();
            if !kept.is_empty() {
                out.push('?');
                out.push_str(&kept.join("&"));
            }
            if let Some(fragment) = fragment {
                out.push('#');
                out.push_str(fragment);
            }
            out
        })
        .collect();
    (nodes.join(","), value)
}

/// The names of the query parameters of every node of `url`, in order.
pub fn param_names(url: &str) -> Vec<String> {
    nodes(url)
        .iter()
        .filter_map(|node| query_start(node).map(|start| node[start + 1..].to_owned()))
        .flat_map(|query| {
            let query = query.split('#').next().unwrap_or_default().to_owned();
            query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| pair.split('=').next().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The nodes of a comma-separated list: a part without `://` continues the
/// one before (a `,` in a password).
fn nodes(url: &str) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::new();
    for part in url.split(',') {
        match nodes.last_mut() {
            Some(last) if !part.contains("://") => {
                last.push(',');
                last.push_str(part);
            }
            _ => nodes.push(part.to_owned()),
        }
    }
    nodes
}

/// Where a node's query starts: the first `?` after its credentials.
fn query_start(node: &str) -> Option<usize> {
    let after_scheme = node.find("://").map_or(0, |i| i + 3);
    let host_start = node[after_scheme..]
        .rfind('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    node[host_start..].find('?').map(|i| host_start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_taken_from_every_node_and_passwords_are_left_alone() {
        assert_eq!(
            take_param("redis://:p,w?x@a:1?prefix=k,redis://b:2?prefix=k", "prefix"),
            (
                "redis://:p,w?x@a:1,redis://b:2".to_owned(),
                Some("k".to_owned())
            )
        );
        assert_eq!(
            take_param("postgres://db/j?a=1&schema=s&b=2#f", "schema"),
            ("postgres://db/j?a=1&b=2#f".to_owned(), Some("s".to_owned()))
        );
        assert_eq!(
            param_names("redis://:pw?x@a:1?prefix=k&protocol=resp3"),
            ["prefix", "protocol"]
        );
        assert!(param_names("sqlite:j.db").is_empty());
    }
}
