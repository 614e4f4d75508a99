//! `journal`: the durable-actor demo, and a look inside any journal.
//!
//! Every command reaches its backend through the `JournalStorage` trait, by
//! URL: `sqlite:PATH`, `postgres://...` (`?schema=NAME`), `redis://...` or a
//! Redis Cluster (`?prefix=P`), and `memory:`. Exit status: 0 when all is
//! well, 1 when `verify` or `copy` found problems (or a demo check failed),
//! 2 when the command could not run (bad URL, unreachable server, unknown
//! actor, unknown flag).

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
#[derive(Debug, Parser)]
#[command(name = "journal", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
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
    text.strip_prefix("error: ").unwrap_or(&text).to_owned()
}

fn main() -> ExitCode {
    // Nothing here is meant to panic; should something, say so in one line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("journal: internal error: {info}");
    }));
    let cli = match Cli::try_parse() {
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
