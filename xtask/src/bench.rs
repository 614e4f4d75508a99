//! `cargo xtask bench [--backend NAME]`: the workload runner, in release mode.

use std::process::ExitCode;

use crate::run::{cargo, stream};

pub(crate) fn run(args: &[String]) -> ExitCode {
    let mut runner = cargo();
    runner.args([
        "run",
        "--release",
        "--locked",
        "-p",
        "journal-benches",
        "--bin",
        "workload",
        "--",
    ]);
    runner.args(args);
    let finished = stream(runner);
    if finished.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
