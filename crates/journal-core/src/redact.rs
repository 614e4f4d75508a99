//! Keeping credentials out of logs, errors and `Debug` output.

/// The URL with any password replaced by `***`.
///
/// Handles `scheme://user:password@host/...`, `scheme://:password@host`,
/// passwords holding `/`, `?`, `#`, `@` or `,`, `password=` query
/// parameters, and comma-separated node lists; a string that is not a URL
/// comes back as is. Where a URL is ambiguous it hides more, never less.
///
/// ```
/// use journal_core::redact_url;
/// assert_eq!(redact_url("postgres://app:pw@db/j"), "postgres://app:***@db/j");
/// assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    // A part without "://" continues the previous node (a ',' in a password).
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
        .iter()
        .map(|node| redact_node(node))
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_node(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return redact_query(url);
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let mut out = scheme.to_owned();
    // The credentials end at the last '@': a password may hold '/', '?',
    // '#' and '@'. An '@' further on (in a query) only hides more.
    let after = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let (user, password) = match userinfo.find(':') {
                Some(colon) => (&userinfo[..colon], true),
                None => (userinfo, false),
            };
            if user.contains(['/', '?', '#', '@']) {
                out.push_str("***");
            } else {
                out.push_str(user);
                if password {
                    out.push_str(":***");
                }
            }
            &rest[at..]
        }
        None => rest,
    };
    out.push_str(&redact_query(after));
    out
}

/// Query parameters whose name mentions a password get `***` as value.
fn redact_query(text: &str) -> String {
    let Some((base, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.to_ascii_lowercase().contains("pass") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        for (url, want) in [
            ("postgres://u:p@h:5432/d", "postgres://u:***@h:5432/d"),
            ("postgres://u@h/d", "postgres://u@h/d"),
            ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
            ("redis://u:p%40ss@h", "redis://u:***@h"),
            ("postgres://u:p@ss@h/d?x=1", "postgres://u:***@h/d?x=1"),
            ("sqlite:journal.db", "sqlite:journal.db"),
            (
                "postgres://postgres:hun/ter2@127.0.0.1:1/test",
                "postgres://postgres:***@127.0.0.1:1/test",
            ),
            (
                "postgres://u@h:1/test?password=hunter2&sslmode=disable",
                "postgres://u@h:1/test?password=***&sslmode=disable",
            ),
            (
                "postgres://h/d?user=u&PassWord=x",
                "postgres://h/d?user=u&PassWord=***",
            ),
            (
                "redis://:a1@127.0.0.1:1,redis://:b2@127.0.0.1:2",
                "redis://:***@127.0.0.1:1,redis://:***@127.0.0.1:2",
            ),
            (
                "redis://:a,b@h:1,redis://h:2",
                "redis://:***@h:1,redis://h:2",
            ),
            ("postgres://u:p?#x@h/d", "postgres://u:***@h/d"),
            ("postgres://u@h/d?password=x&n=a@b", "postgres://***@b"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
