//! Keeping credentials out of logs, errors and `Debug` output.

/// The URL with any password replaced by `***`.
///
/// Handles `scheme://user:password@host/...`, `scheme://:password@host` and
/// comma-separated node lists; a string that is not a URL comes back as is.
///
/// ```
/// use journal_core::redact_url;
/// assert_eq!(redact_url("postgres://app:pw@db/j"), "postgres://app:***@db/j");
/// assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    // The authority ends at the first '/', '?' or '#'; the userinfo at its last '@'.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = authority.split_at(at);
    let user = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => userinfo.to_owned(),
    };
    format!("{scheme}{user}{host}{tail}")
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
            ("", ""),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
