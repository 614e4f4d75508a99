//! `cargo xtask ci`: every check CI makes, in order, then one summary table.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::run::{cargo, quietly, stream, Finished};
use crate::{redis, services};

/// Test counts of one step.
#[derive(Default, Clone, Copy)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

struct Step {
    name: String,
    success: bool,
    elapsed: Duration,
    counts: Option<Counts>,
    note: String,
}

impl Step {
    fn from(name: &str, finished: &Finished, counts: Option<Counts>) -> Self {
        Step {
            name: name.to_owned(),
            success: finished.success,
            elapsed: finished.elapsed,
            counts,
            note: String::new(),
        }
    }
}

pub fn run(args: &[String]) -> ExitCode {
    if let Some(unknown) = args.first() {
        eprintln!("xtask ci: unexpected argument {unknown:?}");
        return ExitCode::from(2);
    }
    if std::env::var_os("PROPTEST_CASES").is_none() {
        std::env::set_var("PROPTEST_CASES", "64");
    }
    let mut steps = Vec::new();

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    steps.push(Step::from("fmt --check", &stream(fmt), None));

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]);
    steps.push(Step::from("clippy -D warnings", &stream(clippy), None));

    let mut doc = cargo();
    doc.args([
        "doc",
        "--workspace",
        "--no-deps",
        "--all-features",
        "--locked",
    ]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    steps.push(Step::from("doc -D warnings", &stream(doc), None));

    let started = Instant::now();
    let checked = crate::figures::docs(None, true);
    if let Err(e) = &checked {
        eprintln!("bench figures: {e}");
    }
    steps.push(Step {
        name: "bench figures in READMEs".into(),
        success: checked.is_ok(),
        elapsed: started.elapsed(),
        counts: None,
        note: checked.err().unwrap_or_default(),
    });

    // Journal files of earlier runs (tests write under cargo's target tmp dir).
    let _ = std::fs::remove_dir_all("target/tmp");
    steps.push(server_step("postgres server", services::ensure_postgres()));
    steps.push(server_step("redis server", redis::ensure_redis()));
    let cluster = start_redis_cluster(&mut steps);
    let prefix = format!("jt_{}_", std::process::id());
    std::env::set_var("JOURNAL_TEST_SCHEMA_PREFIX", &prefix);
    std::env::set_var("JOURNAL_TEST_KEY_PREFIX", &prefix);
    steps.push(unit_and_integration_tests());
    steps.push(main_job());
    drop(cluster);
    let cleanup = redis::delete_redis_keys(&prefix);
    steps.push(Step {
        name: "redis cleanup".into(),
        success: true,
        elapsed: Duration::ZERO,
        counts: None,
        note: match cleanup {
            Ok(()) => "deleted this run's keys; cluster stopped".into(),
            Err(problem) => format!("WARNING: {problem}"),
        },
    });
    // Leftover schemas are worth a loud note, not a failed run: every test
    // has already passed or failed on its own.
    let cleanup = services::drop_postgres_schemas(&prefix);
    steps.push(Step {
        name: "postgres cleanup".into(),
        success: true,
        elapsed: Duration::ZERO,
        counts: None,
        note: match cleanup {
            Ok(()) => "dropped this run's schemas".into(),
            Err(problem) => format!("WARNING: {problem}"),
        },
    });

    let mut doctests = cargo();
    doctests.args(["test", "--workspace", "--all-features", "--doc", "--locked"]);
    let finished = stream(doctests);
    let counts = libtest_counts(&finished.lines);
    steps.push(Step::from("doc tests", &finished, Some(counts)));

    // The library crates as crates.io would get them: each packaged, and
    // built from its .crate against the others' (offline: what the build
    // above downloaded is all it needs).
    let mut package = cargo();
    package.args(["package", "--workspace", "--offline", "--allow-dirty"]);
    for internal in [
        "journal-cli",
        "journal-benches",
        "xtask",
        "redis-test-cluster",
    ] {
        package.args(["--exclude", internal]);
    }
    steps.push(Step::from("package libraries", &stream(package), None));

    print_summary(&steps)
}

/// Starts the throwaway Redis Cluster the cluster tests run on, unless
/// `JOURNAL_REDIS_CLUSTER_URL` names one already.
fn start_redis_cluster(steps: &mut Vec<Step>) -> Option<redis_test_cluster::TestCluster> {
    if std::env::var("JOURNAL_REDIS_CLUSTER_URL").is_ok_and(|u| !u.is_empty()) {
        steps.push(server_step(
            "redis cluster",
            Ok("given by JOURNAL_REDIS_CLUSTER_URL"),
        ));
        return None;
    }
    let started = Instant::now();
    let _ = std::fs::create_dir_all("target/tmp");
    let outcome = redis::start_cluster(Path::new("target/tmp"));
    let (cluster, result) = match outcome {
        Ok(cluster) => {
            std::env::set_var("JOURNAL_REDIS_CLUSTER_URL", cluster.url());
            (Some(cluster), Ok("started: 3 primaries, 3 replicas"))
        }
        Err(advice) => (None, Err(advice)),
    };
    let mut step = server_step("redis cluster", result);
    step.elapsed = started.elapsed();
    steps.push(step);
    cluster
}

/// A step that checks or prepares a server. Under `CI=true` a missing
/// server fails the run; locally its tests skip, saying so.
fn server_step(name: &str, outcome: Result<&'static str, String>) -> Step {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let (success, note) = match outcome {
        Ok(state) => (true, state.to_owned()),
        Err(advice) => {
            eprintln!("xtask: {name}: {advice}");
            (
                !ci,
                if ci {
                    advice
                } else {
                    format!("tests skip: {advice}")
                },
            )
        }
    };
    Step {
        name: name.to_owned(),
        success,
        elapsed: Duration::ZERO,
        counts: None,
        note,
    }
}

/// The README's main job with its defaults, `journal demo`, then
/// `journal verify` on the file it wrote, with the binary the tests built.
fn main_job() -> Step {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let binary = Path::new(&target).join("debug").join("journal");
    let db = Path::new(&target).join("tmp").join("main-job.db");
    let mut demo = std::process::Command::new(&binary);
    demo.arg("demo").arg("--db").arg(&db);
    let finished = stream(demo);
    if !finished.success {
        return Step::from("main job: journal demo", &finished, None);
    }
    let mut verify = std::process::Command::new(&binary);
    verify.arg("verify").arg(format!("sqlite:{}", db.display()));
    let verified = stream(verify);
    let mut step = Step::from("main job: demo + verify", &verified, None);
    step.elapsed += finished.elapsed;
    step.note = finished
        .lines
        .iter()
        .find(|l| l.contains("from checkpoints:"))
        .map_or_else(String::new, |l| l.trim().to_owned());
    step
}

/// Every unit and integration test, with nextest where it is installed.
fn unit_and_integration_tests() -> Step {
    let mut probe = cargo();
    probe.args(["nextest", "--version"]);
    if quietly(probe) {
        let mut nextest = cargo();
        nextest.args([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--locked",
            "--no-fail-fast",
            "--failure-output",
            "final",
        ]);
        let finished = stream(nextest);
        let counts = nextest_counts(&finished.lines);
        Step::from("tests (nextest)", &finished, counts)
    } else {
        let mut test = cargo();
        test.args([
            "test",
            "--workspace",
            "--all-features",
            "--locked",
            "--no-fail-fast",
            "--lib",
            "--bins",
            "--tests",
        ]);
        let finished = stream(test);
        let counts = libtest_counts(&finished.lines);
        let mut step = Step::from("tests (cargo test)", &finished, Some(counts));
        step.note = "nextest not installed".into();
        step
    }
}

/// Parses nextest's `Summary [ 1.2s] 75 tests run: 74 passed, 1 failed, 2 skipped`.
fn nextest_counts(lines: &[String]) -> Option<Counts> {
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains("Summary [") && l.contains("tests run"))?;
    let mut counts = Counts::default();
    let after = line.split("tests run:").nth(1)?;
    for part in after.split(',') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => counts.passed += n,
            "failed" | "timed" => counts.failed += n,
            "skipped" => counts.skipped += n,
            _ => {}
        }
    }
    Some(counts)
}

/// Sums libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...` lines.
fn libtest_counts(lines: &[String]) -> Counts {
    let mut counts = Counts::default();
    for line in lines.iter().filter(|l| l.starts_with("test result:")) {
        for part in line.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let Some(i) = words
                .iter()
                .position(|w| matches!(*w, "passed" | "failed" | "ignored"))
            else {
                continue;
            };
            let Some(n) = i.checked_sub(1).and_then(|j| words[j].parse::<u64>().ok()) else {
                continue;
            };
            match words[i] {
                "passed" => counts.passed += n,
                "failed" => counts.failed += n,
                _ => counts.skipped += n,
            }
        }
    }
    counts
}

fn print_summary(steps: &[Step]) -> ExitCode {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n{:<22} {:<6} {:>9}  {:>7} {:>7} {:>8}  note",
        "step", "result", "time", "passed", "failed", "skipped"
    );
    let _ = writeln!(table, "{}", "-".repeat(78));
    let mut total = Counts::default();
    for step in steps {
        let (p, f, s) = step.counts.map_or_else(
            || ("-".to_owned(), "-".to_owned(), "-".to_owned()),
            |c| {
                total.passed += c.passed;
                total.failed += c.failed;
                total.skipped += c.skipped;
                (
                    c.passed.to_string(),
                    c.failed.to_string(),
                    c.skipped.to_string(),
                )
            },
        );
        let _ = writeln!(
            table,
            "{:<22} {:<6} {:>8.1}s  {:>7} {:>7} {:>8}  {}",
            step.name,
            if step.success { "ok" } else { "FAILED" },
            step.elapsed.as_secs_f64(),
            p,
            f,
            s,
            step.note
        );
    }
    let failed_steps: Vec<&str> = steps
        .iter()
        .filter(|s| !s.success)
        .map(|s| s.name.as_str())
        .collect();
    let total_time: f64 = steps.iter().map(|s| s.elapsed.as_secs_f64()).sum();
    let _ = writeln!(table, "{}", "-".repeat(78));
    let _ = writeln!(
        table,
        "total time {total_time:.1}s; failed steps: {}",
        if failed_steps.is_empty() {
            "none".to_owned()
        } else {
            failed_steps.join(", ")
        }
    );
    // The closing line, in the plain form CI reads.
    let _ = writeln!(
        table,
        "tests: {} passed, {} failed, {} skipped",
        total.passed, total.failed, total.skipped
    );
    print!("{table}");
    if failed_steps.is_empty() && total.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
