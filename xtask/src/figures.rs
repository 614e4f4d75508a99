//! `cargo xtask bench-docs [--from DIR] [--check]`: the READMEs' performance
//! figures, filled in from one run of `cargo xtask bench`.
//!
//! The runner writes `<backend>.json` per backend, each naming the commit it
//! measured. `bench-docs --from target/bench` copies them to
//! `benches/results/`, writes `benches/results/README.md` (every figure, as
//! tables) and rewrites every figure span in the READMEs:
//!
//! ```text
//! <!-- bench sqlite "group commit appends/s, 256" ratio -->0.83x<!-- /bench -->
//! <!-- bench commit -->1dac2f1<!-- /bench -->
//! ```
//!
//! A span names a backend, a figure (its full name or a prefix only it
//! has) and what to show: `value`, `baseline`, `ratio`, or `value+ratio`
//! (`233,514 (0.14x)`). `--check` (a step of `cargo xtask ci`) changes
//! nothing and fails when a span or the results table is not what the
//! results give, when a span names a figure they lack, or when the results
//! are not all of one clean commit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const BACKENDS: &[&str] = &["memory", "sqlite", "postgres", "redis"];
const RESULTS: &str = "benches/results";
const OPEN: &str = "<!-- bench ";
const CLOSE: &str = "<!-- /bench -->";

/// One figure of a results file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Figure {
    name: String,
    value: f64,
    unit: String,
    baseline: f64,
    baseline_name: String,
    ratio: f64,
    target: String,
    met: Option<bool>,
}

/// One backend's results file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Results {
    backend: String,
    commit: String,
    dirty: bool,
    cpus: u64,
    figures: Vec<Figure>,
}

impl Results {
    /// Parses a results file the runner wrote.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let text_of = |v: &serde_json::Value, key: &str| {
            v.get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("no text {key:?}"))
        };
        // JSON has no NaN: the runner writes `null` for a figure it could
        // not compute.
        let number = |v: &serde_json::Value, key: &str| {
            v.get(key)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(f64::NAN)
        };
        let figures = doc
            .get("figures")
            .and_then(serde_json::Value::as_array)
            .ok_or("no figures")?
            .iter()
            .map(|f| {
                Ok(Figure {
                    name: text_of(f, "name")?,
                    value: number(f, "value"),
                    unit: text_of(f, "unit")?,
                    baseline: number(f, "baseline"),
                    baseline_name: text_of(f, "baseline_name")?,
                    ratio: number(f, "ratio"),
                    target: text_of(f, "target")?,
                    met: f.get("met").and_then(serde_json::Value::as_bool),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Results {
            backend: text_of(&doc, "backend")?,
            commit: text_of(&doc, "commit")
                .map_err(|_| "no commit: written by a runner older than bench-docs".to_owned())?,
            dirty: doc
                .get("dirty")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(true),
            cpus: doc
                .get("cpus")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            figures,
        })
    }

    /// The one figure named `name`, or whose name starts with it.
    fn figure(&self, name: &str) -> Result<&Figure, String> {
        if let Some(exact) = self.figures.iter().find(|f| f.name == name) {
            return Ok(exact);
        }
        let mut found = self.figures.iter().filter(|f| f.name.starts_with(name));
        match (found.next(), found.next()) {
            (Some(one), None) => Ok(one),
            (None, _) => Err(format!("{}: no figure {name:?}", self.backend)),
            (Some(a), Some(b)) => Err(format!(
                "{}: {name:?} names more than one figure ({:?}, {:?}, ...)",
                self.backend, a.name, b.name
            )),
        }
    }
}

/// A number as the READMEs print it: thousands separated, three
/// significant digits below 1,000 (at most four decimals).
pub(crate) fn number(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let magnitude = v.abs();
    if magnitude >= 999.5 {
        let whole = format!("{magnitude:.0}");
        let mut out = String::new();
        for (i, digit) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(digit);
        }
        return if v < 0.0 { format!("-{out}") } else { out };
    }
    if magnitude == 0.0 {
        return "0".into();
    }
    let digits = usize::try_from((2 - magnitude.log10().floor() as i32).clamp(0, 4)).unwrap_or(0);
    format!("{v:.digits$}")
}

/// A ratio as the READMEs print it: `0.83x`, `14.8x`, `0.047x`.
pub(crate) fn ratio(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v.abs() >= 10.0 {
        format!("{v:.1}x")
    } else if v.abs() >= 0.1 || v == 0.0 {
        format!("{v:.2}x")
    } else {
        // Two significant digits: 0.047x, 0.0060x.
        let digits = usize::try_from((1 - v.abs().log10().floor() as i32).clamp(0, 4)).unwrap_or(0);
        format!("{v:.digits$}x")
    }
}

/// What a span shows, from its arguments (the text between `<!-- bench `
/// and `-->`).
fn render_span(args: &str, results: &[Results]) -> Result<String, String> {
    let args = args.trim();
    if args == "commit" {
        let commit = results.first().map_or("unknown", |r| r.commit.as_str());
        return Ok(commit.chars().take(12).collect());
    }
    let (backend, rest) = args
        .split_once(' ')
        .ok_or_else(|| format!("span {args:?}: want BACKEND \"FIGURE\" FIELD"))?;
    let rest = rest.trim();
    let rest = rest
        .strip_prefix('"')
        .ok_or_else(|| format!("span {args:?}: the figure's name goes in double quotes"))?;
    let (name, field) = rest
        .split_once('"')
        .ok_or_else(|| format!("span {args:?}: unclosed quote"))?;
    let of = results
        .iter()
        .find(|r| r.backend == backend)
        .ok_or_else(|| format!("span {args:?}: no results for backend {backend:?}"))?;
    let figure = of.figure(name)?;
    match field.trim() {
        "value" => Ok(number(figure.value)),
        "baseline" => Ok(number(figure.baseline)),
        "ratio" => Ok(ratio(figure.ratio)),
        "value+ratio" => Ok(format!(
            "{} ({})",
            number(figure.value),
            ratio(figure.ratio)
        )),
        other => Err(format!(
            "span {args:?}: field {other:?} is not value, baseline, ratio or value+ratio"
        )),
    }
}

/// `text` with every span filled in from `results`.
pub(crate) fn fill(text: &str, results: &[Results]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after_open = &rest[start + OPEN.len()..];
        let args_end = after_open
            .find("-->")
            .ok_or("a `<!-- bench` span is not closed with `-->`")?;
        let args = &after_open[..args_end];
        let body = &after_open[args_end + 3..];
        let body_end = body
            .find(CLOSE)
            .ok_or_else(|| format!("span {args:?} has no `{CLOSE}`"))?;
        if body[..body_end].contains(OPEN) {
            return Err(format!("span {args:?} holds another span"));
        }
        out.push_str(&rest[..start + OPEN.len() + args_end + 3]);
        out.push_str(&render_span(args, results)?);
        out.push_str(CLOSE);
        rest = &body[body_end + CLOSE.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every figure of every backend, as one Markdown document.
pub(crate) fn tables(results: &[Results]) -> String {
    let mut out = String::from("# Benchmark results\n\n");
    let commit = results.first().map_or("unknown", |r| r.commit.as_str());
    let cpus = results.first().map_or(0, |r| r.cpus);
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench-docs` from one run of `cargo xtask bench` \
         at commit `{commit}` on a machine with {cpus} CPUs. Each figure stands beside \
         a baseline measured in the same run; the ratio is figure ÷ baseline. The \
         READMEs' performance figures are spans filled in from these files \
         (`cargo xtask ci` checks that they agree)."
    );
    for r in results {
        let _ = write!(
            out,
            "\n## {0}\n\nChart: [`{0}.svg`]({0}.svg).\n\n| figure | value | unit | baseline | ratio | target | baseline measured |\n\
             |---|---:|---|---:|---:|---|---|\n",
            r.backend
        );
        for f in &r.figures {
            let target = match f.met {
                Some(true) => format!("{}: met", f.target),
                Some(false) => format!("{}: **missed**", f.target),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                cell(&f.name),
                number(f.value),
                cell(&f.unit),
                number(f.baseline),
                ratio(f.ratio),
                cell(&target),
                cell(&f.baseline_name)
            );
        }
    }
    out
}

/// A table cell: `|` escaped, and `<` and `>` written as entities so that
/// `Mutex<HashMap<..>>` is not taken for HTML.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The results of every backend under `dir`; all must be of one commit,
/// measured on a clean checkout of it.
fn load(dir: &Path) -> Result<Vec<Results>, String> {
    let mut all = Vec::new();
    for backend in BACKENDS {
        let path = dir.join(format!("{backend}.json"));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e} (run `cargo xtask bench` first)", path.display()))?;
        all.push(Results::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    let first = &all[0];
    for r in &all {
        if r.dirty {
            return Err(format!(
                "{}: measured on a checkout that differed from commit {}; commit, then bench",
                r.backend, r.commit
            ));
        }
        if r.commit != first.commit {
            return Err(format!(
                "the results are of two commits: {} for {}, {} for {}",
                first.commit, first.backend, r.commit, r.backend
            ));
        }
    }
    Ok(all)
}

/// The Markdown files that may hold spans.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![
        PathBuf::from("README.md"),
        PathBuf::from("conformance-tests/README.md"),
    ];
    if let Ok(crates) = std::fs::read_dir("crates") {
        let mut found: Vec<PathBuf> = crates
            .filter_map(Result::ok)
            .map(|e| e.path().join("README.md"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        files.extend(found);
    }
    files.retain(|p| p.is_file());
    files
}

pub(crate) fn run(args: &[String]) -> ExitCode {
    let mut from = None;
    let mut check = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--from" if let Some(dir) = args.next() => from = Some(PathBuf::from(dir)),
            _ => {
                eprintln!("usage: cargo xtask bench-docs [--from DIR] [--check]");
                return ExitCode::from(2);
            }
        }
    }
    match docs(from.as_deref(), check) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask bench-docs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Checks (`check`) or writes the results table and the READMEs' spans,
/// from `from` when given (copied to `benches/results` first).
pub(crate) fn docs(from: Option<&Path>, check: bool) -> Result<(), String> {
    let results_dir = Path::new(RESULTS);
    if let Some(from) = from {
        if check {
            return Err("--from and --check do not go together".into());
        }
        load(from)?;
        std::fs::create_dir_all(results_dir).map_err(|e| e.to_string())?;
        for backend in BACKENDS {
            let name = format!("{backend}.json");
            std::fs::copy(from.join(&name), results_dir.join(&name))
                .map_err(|e| format!("copying {name}: {e}"))?;
            // The chart of the same run, where the runner drew one.
            let chart = format!("{backend}.svg");
            let _ = std::fs::remove_file(results_dir.join(&chart));
            if from.join(&chart).is_file() {
                std::fs::copy(from.join(&chart), results_dir.join(&chart))
                    .map_err(|e| format!("copying {chart}: {e}"))?;
            }
        }
    }
    let results = load(results_dir)?;
    let mut stale = Vec::new();
    let mut wanted = vec![(results_dir.join("README.md"), tables(&results))];
    for path in documents() {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let filled = fill(&text, &results).map_err(|e| format!("{}: {e}", path.display()))?;
        wanted.push((path, filled));
    }
    for (path, want) in wanted {
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have == want {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else {
            std::fs::write(&path, want).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("written: {}", path.display());
        }
    }
    if !stale.is_empty() {
        return Err(format!(
            "figures differ from {RESULTS} (commit {}) in: {}; run `cargo xtask bench-docs`",
            results[0].commit,
            stale.join(", ")
        ));
    }
    println!(
        "bench-docs: every figure is from commit {}",
        results[0].commit
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results() -> Vec<Results> {
        let text = r#"{"backend":"sqlite","unix_time":1,"commit":"0123456789abcdef","dirty":false,"cpus":2,"figures":[
 {"name":"group commit appends/s, 256 concurrent actors","value":52000.4,"unit":"appends/s","baseline":62651,"baseline_name":"raw","ratio":0.83,"better":"higher","target":">= 0.8x","met":true},
 {"name":"group commit latency p99, 256 concurrent actors","value":21.25,"unit":"ms","baseline":7.1,"baseline_name":"raw","ratio":2.99,"better":"lower","target":"","met":null},
 {"name":"replay of 100000 entries","value":null,"unit":"entries/s","baseline":1,"baseline_name":"raw","ratio":null,"better":"higher","target":"","met":null}
]}"#;
        vec![Results::parse(text).expect("no error")]
    }

    #[test]
    fn numbers_read_as_the_readmes_print_them() {
        assert_eq!(number(1_234_567.4), "1,234,567");
        assert_eq!(number(62_651.0), "62,651");
        assert_eq!(number(999.6), "1,000");
        assert_eq!(number(313.2), "313");
        assert_eq!(number(21.25), "21.2");
        assert_eq!(number(1.88), "1.88");
        assert_eq!(number(0.0028), "0.0028");
        assert_eq!(number(f64::NAN), "n/a");
        assert_eq!(ratio(0.834), "0.83x");
        assert_eq!(ratio(14.83), "14.8x");
        assert_eq!(ratio(0.0051), "0.0051x");
        assert_eq!(ratio(0.0468), "0.047x");
        assert_eq!(ratio(0.006), "0.0060x");
    }

    #[test]
    fn spans_are_filled_and_the_rest_is_kept() {
        let text = "Group commit: <!-- bench sqlite \"group commit appends/s\" value+ratio -->old<!-- /bench -->/s, p99 <!-- bench sqlite \"group commit latency p99\" value -->9<!-- /bench --> ms (<!-- bench commit -->x<!-- /bench -->).\n";
        let filled = fill(text, &results()).expect("no error");
        assert_eq!(
            filled,
            "Group commit: <!-- bench sqlite \"group commit appends/s\" value+ratio -->52,000 (0.83x)<!-- /bench -->/s, p99 <!-- bench sqlite \"group commit latency p99\" value -->21.2<!-- /bench --> ms (<!-- bench commit -->0123456789ab<!-- /bench -->).\n"
        );
        assert_eq!(
            fill(&filled, &results()).expect("no error"),
            filled,
            "filling is stable"
        );
    }

    #[test]
    fn a_span_naming_no_one_figure_is_an_error() {
        let missing = "<!-- bench sqlite \"feed entries/s\" value -->1<!-- /bench -->";
        assert!(fill(missing, &results())
            .expect_err("an error")
            .contains("no figure"));
        let ambiguous = "<!-- bench sqlite \"group commit\" value -->1<!-- /bench -->";
        assert!(fill(ambiguous, &results())
            .expect_err("an error")
            .contains("more than one"));
        let backend = "<!-- bench redis \"group commit appends/s\" value -->1<!-- /bench -->";
        assert!(fill(backend, &results())
            .expect_err("an error")
            .contains("no results"));
        let field = "<!-- bench sqlite \"group commit appends/s\" speed -->1<!-- /bench -->";
        assert!(fill(field, &results())
            .expect_err("an error")
            .contains("field"));
        let unclosed = "<!-- bench sqlite \"group commit appends/s\" value -->1";
        assert!(fill(unclosed, &results()).is_err());
    }

    #[test]
    fn results_without_a_commit_are_refused() {
        let old = r#"{"backend":"memory","unix_time":1,"figures":[]}"#;
        assert!(Results::parse(old)
            .expect_err("an error")
            .contains("no commit"));
    }

    #[test]
    fn the_table_holds_every_figure() {
        let table = tables(&results());
        assert!(table.contains("commit `0123456789abcdef`"));
        assert!(table.contains(
            "| group commit appends/s, 256 concurrent actors | 52,000 | appends/s | 62,651 | 0.83x | &gt;= 0.8x: met | raw |"
        ));
        assert!(table.contains("| replay of 100000 entries | n/a |"));
    }
}
