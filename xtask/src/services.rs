//! The servers the tests need: checked, started when they can be, and
//! cleaned up after the run.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::run::quietly;

/// The PostgreSQL URL the tests use.
pub(crate) fn postgres_url() -> String {
    std::env::var("JOURNAL_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `host:port` of a URL, with `default_port` when it names none.
pub(crate) fn host_port(url: &str, default_port: u16) -> Option<String> {
    let rest = url.split_once("://")?.1;
    // Credentials end at the last '@' (a password may hold '/' or '?');
    // only then does the host end at '/', '?' or ','.
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = rest.split(['/', '?', ',']).next()?;
    Some(if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    })
}

pub(crate) fn reachable(address: &str) -> bool {
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
}

/// Makes sure PostgreSQL answers: starts the local cluster when it does
/// not and the machine has one. `Err` says what to do.
pub(crate) fn ensure_postgres() -> Result<&'static str, String> {
    let url = postgres_url();
    let Some(address) = host_port(&url, 5432) else {
        return Err("JOURNAL_POSTGRES_URL is not a postgres:// URL".into());
    };
    if reachable(&address) {
        return Ok("running");
    }
    let clusters = Path::new("/etc/postgresql");
    if let Ok(versions) = std::fs::read_dir(clusters) {
        for version in versions.flatten() {
            let mut start = Command::new("pg_ctlcluster");
            start
                .args(["--skip-systemctl-redirect"])
                .arg(version.file_name())
                .args(["main", "start"]);
            quietly(start);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if reachable(&address) {
                return Ok("started");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Err(format!(
        "PostgreSQL is not reachable at {address}: start it with \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
         or set JOURNAL_POSTGRES_URL to a server the tests may create schemas in"
    ))
}

/// Drops every schema whose name starts with `prefix` (this run's).
pub(crate) fn drop_postgres_schemas(prefix: &str) -> Result<(), String> {
    let sql = format!(
        "DO $$DECLARE r record; BEGIN
           FOR r IN SELECT nspname FROM pg_namespace WHERE starts_with(nspname, '{prefix}') LOOP
             EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
           END LOOP; END$$;"
    );
    let mut psql = Command::new("psql");
    psql.arg(postgres_url())
        .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", &sql]);
    if quietly(psql) {
        Ok(())
    } else {
        Err(format!(
            "could not drop the test schemas {prefix}* (is psql installed?)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn the_address_holds_no_part_of_a_password() {
        for (url, want) in [
            ("postgres://postgres@127.0.0.1:5432/test", "127.0.0.1:5432"),
            ("postgres://u:pa/ss@h/db", "h:5432"),
            ("postgres://u:pa?ss@h:1/db", "h:1"),
            ("redis://:pa,ss@h", "h:5432"),
            ("postgres://h", "h:5432"),
        ] {
            assert_eq!(host_port(url, 5432).as_deref(), Some(want), "{url}");
        }
        assert_eq!(host_port("no url", 1), None);
    }
}
