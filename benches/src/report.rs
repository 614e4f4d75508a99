//! Printing the figures, and writing them as JSON and as an SVG chart.

use std::fmt::Write as _;
use std::path::Path;

use crate::{Better, Figure};

/// The figures as a table, one line each.
pub fn table(backend: &str, figures: &[Figure]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nbackend: {backend}");
    let _ = writeln!(
        out,
        "{:<52} {:>14} {:<10} {:>14}  {:>8}  {:<22} baseline",
        "figure", "value", "unit", "baseline", "ratio", "target"
    );
    let _ = writeln!(out, "{}", "-".repeat(150));
    for f in figures {
        let target = match f.met {
            Some(true) => format!("{} ok", f.target),
            Some(false) => format!("{} MISSED", f.target),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<52} {:>14} {:<10} {:>14}  {:>7.3}x  {:<22} {}",
            f.name,
            number(f.value),
            f.unit,
            number(f.baseline),
            f.ratio(),
            target,
            f.baseline_name
        );
    }
    out
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

/// The source the figures were measured on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The commit checked out (`git rev-parse HEAD`), or `"unknown"`
    /// outside a git checkout.
    pub commit: String,
    /// Whether tracked files differed from that commit.
    pub dirty: bool,
}

/// The commit of the workspace this runner was built from, and whether
/// its tracked files differ from it, read with `git`.
pub fn source() -> Source {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&workspace)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(commit) => Source {
            commit,
            dirty: git(&["status", "--porcelain", "--untracked-files=no"])
                .is_none_or(|changes| !changes.is_empty()),
        },
        None => Source {
            commit: "unknown".into(),
            dirty: true,
        },
    }
}

/// The figures as one JSON document.
pub fn json(backend: &str, unix_time: u64, source: &Source, figures: &[Figure]) -> String {
    let mut out = format!(
        "{{\"backend\":{},\"unix_time\":{unix_time},\"commit\":{},\"dirty\":{},\"cpus\":{},\"figures\":[",
        json_string(backend),
        json_string(&source.commit),
        source.dirty,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    for (i, f) in figures.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "\n {{\"name\":{},\"value\":{},\"unit\":{},\"baseline\":{},\"baseline_name\":{},\"ratio\":{},\"better\":{},\"target\":{},\"met\":{}}}",
            json_string(&f.name),
            json_number(f.value),
            json_string(f.unit),
            json_number(f.baseline),
            json_string(&f.baseline_name),
            json_number(f.ratio()),
            json_string(if f.better == Better::Higher { "higher" } else { "lower" }),
            json_string(&f.target),
            f.met.map_or("null".to_owned(), |m| m.to_string()),
        );
    }
    out.push_str("\n]}\n");
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A bar chart: per figure, the journal's value and the baseline's, scaled
/// to the larger of the two.
pub fn svg(backend: &str, figures: &[Figure]) -> String {
    let (width, row) = (900.0, 46.0);
    let height = 50.0 + row * figures.len() as f64;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<text x="10" y="22" font-size="15">journal workloads: {} (dark: journal, light: baseline)</text>
"#,
        xml(backend)
    );
    for (i, f) in figures.iter().enumerate() {
        let y = 40.0 + row * i as f64;
        let max = f.value.max(f.baseline).max(f64::MIN_POSITIVE);
        let bar = |v: f64| (v / max * 420.0).max(1.0);
        let _ = write!(
            out,
            r##"<text x="10" y="{:.0}">{}</text>
<rect x="440" y="{:.0}" width="{:.1}" height="14" fill="#2b5d8a"/><text x="{:.1}" y="{:.0}">{} {}</text>
<rect x="440" y="{:.0}" width="{:.1}" height="14" fill="#a9c6e0"/><text x="{:.1}" y="{:.0}">{}</text>
"##,
            y + 16.0,
            xml(&f.name),
            y + 4.0,
            bar(f.value),
            445.0 + bar(f.value),
            y + 15.0,
            number(f.value),
            xml(f.unit),
            y + 20.0,
            bar(f.baseline),
            445.0 + bar(f.baseline),
            y + 31.0,
            number(f.baseline),
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Writes `<dir>/<backend>.json` and `<dir>/<backend>.svg`.
pub fn write(
    dir: &Path,
    backend: &str,
    unix_time: u64,
    source: &Source,
    figures: &[Figure],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(format!("{backend}.json")),
        json(backend, unix_time, source, figures),
    )?;
    std::fs::write(dir.join(format!("{backend}.svg")), svg(backend, figures))
}
