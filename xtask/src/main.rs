//! Project automation. `cargo xtask ci` runs everything CI runs;
//! `cargo xtask help` lists the commands.

mod bench;
mod ci;
mod figures;
mod redis;
mod run;
mod services;

use std::process::ExitCode;

const HELP: &str = "\
usage: cargo xtask <command>

commands:
  ci      fmt check, clippy -D warnings, docs -D warnings, every test;
          ends with a summary table (exit status 1 when a step failed)
  bench   the workload runner in release mode: every figure beside a raw
          baseline from the same run; JSON and SVG under target/bench/
          (`--backend memory` for one backend)
  bench-docs [--from DIR] [--check]
          the READMEs' performance figures from one bench run: copies
          DIR/<backend>.json (e.g. target/bench) to benches/results/ and
          fills every `<!-- bench ... -->` span; --check (a ci step)
          only checks that they agree
  with-redis-cluster <command...>
          runs a command with a throwaway Redis Cluster started and
          JOURNAL_REDIS_CLUSTER_URL set, then stops the cluster
  help    this text

environment:
  PROPTEST_CASES        property-test cases per property (ci default: 64)
  JOURNAL_POSTGRES_URL  PostgreSQL for the tests (default postgres://postgres@127.0.0.1:5432/test);
                        each run works in schemas of its own and drops them
  JOURNAL_REDIS_URL     standalone Redis for the tests (default redis://127.0.0.1:6379);
                        each run writes under a key prefix of its own and deletes its keys
  JOURNAL_REDIS_CLUSTER_URL
                        a Redis Cluster for the cluster tests; unset, `ci` starts one
                        (3 primaries, 3 replicas) from redis-server and stops it after
  CI               when `true`, nothing may be skipped
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("bench-docs") => figures::run(&args[1..]),
        Some("with-redis-cluster") => redis::with_cluster(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("xtask: unknown command {other:?}\n\n{HELP}");
            ExitCode::from(2)
        }
    }
}
