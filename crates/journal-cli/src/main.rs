//! `journal`: the durable-actor demo, and a look inside any journal.
//!
//! Every command reaches its backend through the `JournalStorage` trait, by
//! URL: `sqlite:PATH`, `postgres://...` (`?schema=NAME`), `redis://...` or a
//! Redis Cluster (`?prefix=P`), and `memory:`. Exit status: 0 when all is
//! well, 1 when `verify` or `copy` found problems (or a demo check failed),
//! 2 when the command could not run (bad URL, unreachable server, unknown
//! actor, unknown flag).
//!
//! `JOURNAL_URL` stands in for the URL of `actors`, `show`, `stats`,
//! `verify`, `at` and `tail` when none is given (`journal show cart-1`), so
//! a password need not be on the command line.

mod account;
mod backend;
mod copy;
mod demo;
mod inspect;
mod output;
mod tail;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::backend::Failure;

/// Look inside durable-actor journals, move them between backends, and see
/// a durable actor survive a crash.
///
/// URLs: sqlite:PATH, postgres://USER@HOST/DB[?schema=NAME],
/// redis://HOST:PORT[?prefix=P], redis-cluster://HOST:PORT[?prefix=P],
/// memory:
#[derive(Parser)]
#[command(name = "journal", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run durable bank accounts, typed actors of an actor system, on an
    /// SQLite file: crash them part-way, recover them, let durable timers
    /// reverse the transfers not confirmed in time after the restart, and
    /// check that nothing acknowledged was lost, no payment was made twice
    /// and every timer fired once.
    Demo(demo::DemoArgs),
    /// The actors, with entry counts and highest sequence.
    Actors {
        /// The journal's URL.
        url: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// An actor's entries, decoded.
    Show(inspect::ShowArgs),
    /// Totals: actors, entries, checkpoints, sizes.
    Stats {
        /// The journal's URL.
        url: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check that journals are whole: contiguous sequences, every entry and
    /// checkpoint decodable, checkpoints in range, counts consistent.
    /// Exits with 1 and lists the problems when anything is wrong.
    ///
    /// Safe on a live journal: an actor found with problems is checked
    /// again (three times at most) and only problems that stay are
    /// reported, since appends, checkpoints and truncation racing the
    /// reads can look like damage for a moment; the store's totals are
    /// compared only when they did not change during the run. A value
    /// the backend cannot read is a problem of its actor, not an abort.
    Verify {
        /// The journal's URL.
        url: String,
        /// Only this actor.
        actor: Option<String>,
        /// One JSON object: the counts, whether it passed, the problems.
        #[arg(long)]
        json: bool,
    },
    /// Copy an SQLite journal in use to a new file, consistent as of one
    /// moment (`VACUUM INTO`): appends go on meanwhile. The copy opens like
    /// the original (`sqlite:OUT`). For PostgreSQL use `pg_dump`; for
    /// Redis, its own persistence (RDB, AOF).
    Backup {
        /// The journal's URL (`sqlite:PATH`).
        url: String,
        /// The new file.
        out: std::path::PathBuf,
    },
    /// Time travel: an actor as it was after entry SEQ.
    At(inspect::AtArgs),
    /// Follow an actor's journal live, like `tail -f`: its last entries
    /// (or those from `--from`), then each new one as it is appended, until
    /// interrupted.
    Tail(tail::TailArgs),
    /// Copy journals and checkpoints to another journal, in batches;
    /// re-running continues where it stopped and never duplicates. Verified
    /// at the end.
    Copy(copy::CopyArgs),
}

/// What a command tells the process to exit with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// All is well.
    Ok,
    /// The command ran and found problems.
    Problems,
}

async fn run(command: Command) -> Result<Outcome, Failure> {
    match command {
        Command::Demo(args) => demo::run(args).await,
        Command::Actors { url, json } => inspect::actors(&url, json).await,
        Command::Show(args) => inspect::show(args).await,
        Command::Stats { url, json } => inspect::stats(&url, json).await,
        Command::Verify { url, actor, json } => verify::run(&url, actor.as_deref(), json).await,
        Command::At(args) => inspect::at(args).await,
        Command::Backup { url, out } => inspect::backup(&url, &out).await,
        Command::Copy(args) => copy::run(args).await,
        Command::Tail(args) => tail::run(args).await,
    }
}

/// clap's message for a usage error, in one line, without the usage.
fn usage_error(e: &clap::Error) -> String {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand
    ) {
        return "a command is needed: demo, actors, show, stats, verify, at or copy".into();
    }
    let rendered = e.render().to_string();
    let text = rendered
        .lines()
        .take_while(|line| !line.starts_with("Usage:"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    // clap quotes the arguments it did not take: a URL among them keeps
    // its password out.
    let text = text
        .split(' ')
        .map(journal_core::redact_url)
        .collect::<Vec<_>>()
        .join(" ");
    text.strip_prefix("error: ").unwrap_or(&text).to_owned()
}

/// The commands whose first argument is a journal URL.
const TAKES_URL: [&str; 7] = ["actors", "show", "stats", "verify", "at", "tail", "backup"];

/// Whether `word` is a journal URL rather than an actor id.
fn looks_like_url(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    [
        "sqlite:",
        "postgres://",
        "postgresql://",
        "redis://",
        "rediss://",
    ]
    .iter()
    .chain(&["redis-cluster://", "rediss-cluster://", "memory:"])
    .any(|scheme| lower.starts_with(scheme))
}

/// `args` with `url` (`JOURNAL_URL`) put in as the first argument of a
/// command that takes one and was given none.
fn with_default_url(
    mut args: Vec<std::ffi::OsString>,
    url: Option<std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return args;
    };
    let Some(command) = args
        .iter()
        .skip(1)
        .position(|a| !a.to_string_lossy().starts_with('-'))
        .map(|i| i + 1)
    else {
        return args;
    };
    if !TAKES_URL.contains(&args[command].to_string_lossy().as_ref()) {
        return args;
    }
    let first = args[command + 1..]
        .iter()
        .find(|a| !a.to_string_lossy().starts_with('-'));
    if !first.is_some_and(|a| looks_like_url(&a.to_string_lossy())) {
        args.insert(command + 1, url);
    }
    args
}

fn main() -> ExitCode {
    // Nothing here is meant to panic; should something, say so in one line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("journal: internal error: {info}");
    }));
    let args = with_default_url(
        std::env::args_os().collect(),
        std::env::var_os("JOURNAL_URL"),
    );
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("journal: {} (see `journal --help`)", usage_error(&e));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("journal: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Problems) => ExitCode::from(1),
        Err(failure) => {
            eprintln!("journal: {failure}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<std::ffi::OsString> {
        words.iter().map(Into::into).collect()
    }

    #[test]
    fn journal_url_stands_in_for_a_missing_url() {
        let env = Some("sqlite:j.db".into());
        assert_eq!(
            with_default_url(args(&["journal", "show", "cart-1"]), env.clone()),
            args(&["journal", "show", "sqlite:j.db", "cart-1"])
        );
        assert_eq!(
            with_default_url(args(&["journal", "actors", "--json"]), env.clone()),
            args(&["journal", "actors", "sqlite:j.db", "--json"])
        );
        // A URL given wins; other commands and no variable change nothing.
        for given in [
            &["journal", "show", "postgres://db/x", "cart-1"][..],
            &["journal", "copy", "cart-1"],
            &["journal", "demo"],
        ] {
            assert_eq!(with_default_url(args(given), env.clone()), args(given));
        }
        assert_eq!(
            with_default_url(args(&["journal", "show", "cart-1"]), None),
            args(&["journal", "show", "cart-1"])
        );
    }
}
