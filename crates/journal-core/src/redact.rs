//! Keeping credentials out of logs, errors and `Debug` output.

/// The URL with any password replaced by `***`.
///
/// Handles `scheme://user:password@host/...`, `scheme://:password@host`,
/// passwords holding `/`, `?`, `#`, `@` or `,`, `password=` parameters
/// wherever they stand (also percent-encoded names such as `%70assword`),
/// comma-separated node lists, and PostgreSQL's key-value connection
/// strings (`host=db password=secret`, quoted values too); other text
/// comes back as is. Where a URL is ambiguous it hides more, never less.
///
/// ```
/// use journal_core::redact_url;
/// assert_eq!(redact_url("postgres://app:pw@db/j"), "postgres://app:***@db/j");
/// assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
/// assert_eq!(redact_url("host=db password='p w'"), "host=db password=***");
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
    let joined = nodes
        .iter()
        .map(|node| redact_userinfo(node))
        .collect::<Vec<_>>()
        .join(",");
    redact_password_parameters(&joined)
}

/// `scheme://user:password@rest` with the password (everything up to the
/// last `@`: a password may hold `/`, `?`, `#` and `@`) as `***`.
fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let (user, password) = match userinfo.find(':') {
        Some(colon) => (&userinfo[..colon], true),
        None => (userinfo, false),
    };
    let mut out = scheme.to_owned();
    if user.contains(['/', '?', '#', '@', '&', '=']) {
        // The last '@' is past the authority (in a path or query): the
        // user cannot be told from the rest, so all of it goes.
        out.push_str("***");
    } else {
        out.push_str(user);
        if password {
            out.push_str(":***");
        }
    }
    out.push_str(&rest[at..]);
    out
}

/// Every `name=value` whose name, percent-decoded, mentions a password,
/// with `***` as value: query parameters (after `?` or `&`) and key-value
/// pairs (after a space or at the start). A value ends at `&`, whitespace
/// or the end; a value in single quotes ends at its closing quote (`\'`
/// escapes one).
fn redact_password_parameters(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut at_boundary = true;
    while !rest.is_empty() {
        if at_boundary {
            if let Some((name_len, value_len)) = password_pair(rest) {
                out.push_str(&rest[..=name_len]);
                out.push_str("***");
                rest = &rest[name_len + 1 + value_len..];
                at_boundary = false;
                continue;
            }
        }
        let Some(c) = rest.chars().next() else { break };
        out.push(c);
        rest = &rest[c.len_utf8()..];
        at_boundary = matches!(c, '?' | '&' | ';') || c.is_whitespace();
    }
    out
}

/// When `text` starts with `name=` and the name mentions a password: the
/// name's length and the value's.
fn password_pair(text: &str) -> Option<(usize, usize)> {
    let name_len =
        text.find(|c: char| c == '=' || c == '&' || c == '?' || c == ';' || c.is_whitespace())?;
    if !text[name_len..].starts_with('=') || name_len == 0 {
        return None;
    }
    if !percent_decoded(&text[..name_len])
        .to_ascii_lowercase()
        .contains("pass")
    {
        return None;
    }
    let value = &text[name_len + 1..];
    let value_len = if let Some(quoted) = value.strip_prefix('\'') {
        let mut escaped = false;
        let mut end = value.len();
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => {
                    end = i + 2;
                    break;
                }
                _ => {}
            }
        }
        end
    } else {
        value
            .find(|c: char| c == '&' || c.is_whitespace())
            .unwrap_or(value.len())
    };
    Some((name_len, value_len))
}

/// `%XX` sequences decoded (bytes that do not form UTF-8 are replaced).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
            // An '@' in a parameter before the password parameter.
            (
                "postgres://u:pw@h/d?application_name=svc@prod&password=s3cret",
                "postgres://u:***@prod&password=***",
            ),
            (
                "postgres://h/d?%70assword=s3cret&x=1",
                "postgres://h/d?%70assword=***&x=1",
            ),
            ("redis://:pa/ss@h:1", "redis://:***@h:1"),
            // PostgreSQL key-value connection strings.
            (
                "host=db user=app password=s3cret",
                "host=db user=app password=***",
            ),
            ("password='s3 cr\\'et' host=db", "password=*** host=db"),
            (
                "host=db PASSWORD=s3cret\tport=1",
                "host=db PASSWORD=***\tport=1",
            ),
            ("sqlite:/tmp/journal.db", "sqlite:/tmp/journal.db"),
            ("memory:", "memory:"),
            ("sqlite:/tmp/é=1 ü", "sqlite:/tmp/é=1 ü"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
            for secret in ["s3cret", "s3 cr", "pa/ss"] {
                assert!(!redact_url(url).contains(secret), "{url}");
            }
        }
    }
}
