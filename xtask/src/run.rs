//! Running commands: their output is shown as it comes and kept for parsing.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// What a finished command left.
pub struct Finished {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its stdout and stderr lines, interleaved as they arrived.
    pub lines: Vec<String>,
    /// How long it ran.
    pub elapsed: Duration,
}

/// `cargo`, as the one that runs xtask.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `command`, echoing its output line by line, and keeps the lines.
pub fn stream(mut command: Command) -> Finished {
    let started = Instant::now();
    eprintln!("\n==> {}", describe(&command));
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("xtask: cannot start {}: {e}", describe(&command));
            return Finished {
                success: false,
                lines: vec![e.to_string()],
                elapsed: started.elapsed(),
            };
        }
    };
    let (tx, rx) = mpsc::channel();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|pipe| {
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(tx);
    let mut lines = Vec::new();
    let mut err = std::io::stderr().lock();
    for line in rx {
        let _ = writeln!(err, "{line}");
        lines.push(line);
    }
    drop(err);
    for reader in readers {
        let _ = reader.join();
    }
    let success = child.wait().is_ok_and(|s| s.success());
    Finished {
        success,
        lines,
        elapsed: started.elapsed(),
    }
}

/// Whether `command` runs and exits 0, with its output discarded.
pub fn quietly(mut command: Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}
