//! Talking to the servers: one `redis-cli` process per command.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// What to tell someone whose machine lacks the binaries.
pub(crate) const INSTALL_ADVICE: &str = "the Redis Cluster tests need redis-server and \
     redis-cli (Redis 7 or later) on the PATH (Debian/Ubuntu: `apt-get install redis-server`; \
     macOS: `brew install redis`)";

/// Runs one command on the node at `127.0.0.1:port` with `redis-cli`, each
/// of `args` one argument of the command (no shell, no quoting: any bytes
/// but NUL pass as they are).
///
/// `Ok` holds the reply as `redis-cli` prints it outside a terminal (raw:
/// one line per element of an array). An error reply, a node that cannot
/// be reached or a missing `redis-cli` are `Err` with the reason.
pub fn cli<S: AsRef<OsStr>>(port: u16, args: &[S]) -> Result<String, String> {
    run(port, &[], args)
}

/// [`cli`] with `--json`: the reply as JSON, for replies holding keys.
pub(crate) fn cli_json<S: AsRef<OsStr>>(port: u16, args: &[S]) -> Result<String, String> {
    run(port, &["--json"], args)
}

fn run<S: AsRef<OsStr>>(port: u16, options: &[&str], args: &[S]) -> Result<String, String> {
    let port_text = port.to_string();
    // `-e`: an error reply is a non-zero exit status, with the error on
    // stderr (redis-cli exits 0 on error replies without it).
    let output = Command::new("redis-cli")
        .args(["-e", "-h", "127.0.0.1", "-p", &port_text])
        .args(options)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli: {e}; {INSTALL_ADVICE}"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let described: Vec<String> = args
        .iter()
        .take(8)
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let why = if stderr.trim().is_empty() {
        stdout.trim()
    } else {
        stderr.trim()
    };
    Err(format!(
        "redis-cli -p {port} {}{}: {why}",
        described.join(" "),
        if args.len() > 8 { " ..." } else { "" }
    ))
}

/// Whether `redis-server` and `redis-cli` can be run. `Err` says what to
/// install.
pub fn check_binaries() -> Result<(), String> {
    for binary in ["redis-server", "redis-cli"] {
        let ran = Command::new(binary)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match ran {
            Ok(status) if status.success() => {}
            Ok(status) => {
                return Err(format!(
                    "`{binary} --version` exited with {status}; {INSTALL_ADVICE}"
                ))
            }
            Err(e) => return Err(format!("cannot run {binary}: {e}; {INSTALL_ADVICE}")),
        }
    }
    Ok(())
}

/// Reads a JSON array of strings (`["a","b\"c"]`), as `redis-cli --json`
/// prints a list of keys.
pub(crate) fn parse_string_array(json: &str) -> Result<Vec<String>, String> {
    let bad = |what: &str| format!("unexpected JSON from redis-cli ({what}): {json:?}");
    let mut chars = json.trim().chars().peekable();
    if chars.next() != Some('[') {
        return Err(bad("no array"));
    }
    let mut items = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            Some(']') if items.is_empty() => break,
            Some('"') => {}
            _ => return Err(bad("expected a string")),
        }
        let mut item = String::new();
        loop {
            match chars.next().ok_or_else(|| bad("unterminated string"))? {
                '"' => break,
                '\\' => match chars.next().ok_or_else(|| bad("unterminated escape"))? {
                    'n' => item.push('\n'),
                    'r' => item.push('\r'),
                    't' => item.push('\t'),
                    'b' => item.push('\u{8}'),
                    'f' => item.push('\u{c}'),
                    'u' => {
                        let first = hex4(&mut chars).ok_or_else(|| bad("bad \\u escape"))?;
                        let code = if (0xD800..0xDC00).contains(&first) {
                            if chars.next() != Some('\\') || chars.next() != Some('u') {
                                return Err(bad("lone surrogate"));
                            }
                            let second = hex4(&mut chars).ok_or_else(|| bad("bad \\u escape"))?;
                            0x10000 + ((first - 0xD800) << 10) + (second.wrapping_sub(0xDC00))
                        } else {
                            first
                        };
                        item.push(char::from_u32(code).ok_or_else(|| bad("bad code point"))?);
                    }
                    other => item.push(other),
                },
                c => item.push(c),
            }
        }
        items.push(item);
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            Some(',') => {}
            Some(']') => break,
            _ => return Err(bad("expected , or ]")),
        }
    }
    Ok(items)
}

/// The four hex digits of a `\\u` escape.
fn hex4(chars: &mut impl Iterator<Item = char>) -> Option<u32> {
    let hex: String = chars.take(4).collect();
    (hex.len() == 4).then(|| u32::from_str_radix(&hex, 16).ok())?
}

#[cfg(test)]
mod tests {
    use super::parse_string_array;

    #[test]
    fn key_lists_are_read_back_exactly() {
        assert_eq!(parse_string_array("[]\n"), Ok(vec![]));
        assert_eq!(
            parse_string_array("[\"k2\",\"a\\\"b\\nc\\\\d\", \"\\u00e9\\ud83e\\udd80\"]\n"),
            Ok(vec![
                "k2".to_owned(),
                "a\"b\nc\\d".to_owned(),
                "é\u{1F980}".to_owned()
            ])
        );
        assert!(parse_string_array("(error) x").is_err());
        assert!(parse_string_array("[\"open").is_err());
    }
}
