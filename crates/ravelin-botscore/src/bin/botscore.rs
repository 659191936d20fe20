//! `botscore`: check feature files, score requests, train models.
//!
//! ```text
//! botscore check FILE                 validate a feature file (exit 0 + summary, or 1 + every reason)
//! botscore check FILE --sample S      ... and refuse it when, on the sampled requests (JSON lines,
//!                                     as `score` reads), it moves too many of them against the
//!                                     published model (--previous, else the built-in one):
//!                                     --max-bot-share, --max-class-change, --max-newly-human,
//!                                     --max-newly-unscored, --min-samples
//! botscore score [--model FILE]       JSON lines in (stdin), JSON lines out (stdout), same order
//! botscore train --data DIR -o FILE   train, write the model, print the held-out evaluation
//! ```

use std::io::{self, BufRead, BufWriter, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use http::Version;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use ravelin_botscore::dataset::{self, Dataset};
use ravelin_botscore::effect::{self, EffectBounds, SampledRequest};
use ravelin_botscore::train::{self, Progress, TrainConfig};
use ravelin_botscore::{
    DEFAULT_MAX_FILE_BYTES, FeatureKind, Limits, Model, RequestView, Scorer, VerifiedBots,
};
use ravelin_config::{Format, Rejection, Store, Validate};
use serde::Deserialize;
use serde_json::json;

/// Longest input line `score` accepts; longer lines get an error object.
const MAX_LINE_BYTES: usize = 1024 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "botscore",
    version,
    about = "Bot-score feature files: check, score, train"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a feature file: exit 0 and print a summary, or exit 1 and print every reason.
    Check {
        /// The feature file (JSON).
        file: PathBuf,
        /// Maximum number of features (default 256; a lower value makes the check stricter).
        #[arg(long, default_value_t = ravelin_botscore::DEFAULT_MAX_FEATURES)]
        max_features: usize,
        /// The currently published file: FILE must then carry a greater model_version.
        #[arg(long)]
        previous: Option<PathBuf>,
        /// Size cap in bytes.
        #[arg(long, default_value_t = DEFAULT_MAX_FILE_BYTES)]
        max_bytes: u64,
        /// Sampled request heads (JSON lines in `score`'s input format): FILE is scored beside
        /// the published model (--previous, else the built-in one) and refused when it moves
        /// them past the bounds below — a gate for CI before a file is published. The edge runs
        /// the same gate (ravelin_botscore::effect) on its own reloads when configured to.
        #[arg(long)]
        sample: Option<PathBuf>,
        /// Largest share (0 to 1) of sampled requests FILE may newly call automated.
        #[arg(long, default_value_t = EffectBounds::default().max_newly_automated)]
        max_bot_share: f64,
        /// Largest share (0 to 1) of sampled requests whose class FILE may change.
        #[arg(long, default_value_t = EffectBounds::default().max_class_change)]
        max_class_change: f64,
        /// Largest share (0 to 1) of the sampled requests the published model calls automated
        /// that FILE may call likely human (bots it would let in).
        #[arg(long, default_value_t = EffectBounds::default().max_newly_human)]
        max_newly_human: f64,
        /// Largest share (0 to 1) of the sampled requests the published model scores that FILE
        /// may fail to score.
        #[arg(long, default_value_t = EffectBounds::default().max_newly_unscored)]
        max_newly_unscored: f64,
        /// Fewer requests scored by the published model than this are no evidence: the sample
        /// gate passes.
        #[arg(long, default_value_t = EffectBounds::default().min_samples)]
        min_samples: usize,
    },
    /// Score JSON-line records from stdin; write one JSON line per input line to stdout.
    ///
    /// Input: {"method":"GET","uri":"/","version":"HTTP/1.1","headers":[["user-agent","..."]]}
    /// (optional "peer":"IP", "ja4":"..."), or {"user_agent":"..."} for a UA-only record.
    /// Output: {"score":N,"verified_bot":false,"reasons":[{"feature":"...","contribution":-1.5}]}
    /// or {"error":"..."} for a line that cannot be scored.
    Score {
        /// Feature file (default: the model shipped with the crate).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Verified-bot list (JSON: {"bots":[{"name","user_agent_token","ranges":[CIDR...]}]}).
        #[arg(long)]
        verified: Option<PathBuf>,
    },
    /// Train a model from labelled UA data plus seeded synthetic requests; print the held-out
    /// evaluation.
    Train {
        /// Directory with crawlers.train.json, browsers.train.jsonl, browsers-spoofed.train.jsonl
        /// and, optionally, ja4-clients.json (captured TLS fingerprints: ja4_stack_mismatch priors).
        #[arg(long)]
        data: PathBuf,
        /// Where to write the model.
        #[arg(short, long)]
        output: PathBuf,
        /// Seed of the split and the synthetic requests.
        #[arg(long, default_value_t = TrainConfig::default().seed)]
        seed: u64,
        /// model_version of the written file.
        #[arg(long, default_value_t = 1)]
        model_version: u64,
        /// Share of the data held out for evaluation.
        #[arg(long, default_value_t = TrainConfig::default().holdout)]
        holdout: f64,
        /// Optimisation steps.
        #[arg(long, default_value_t = TrainConfig::default().epochs)]
        epochs: u32,
        /// L2 penalty on the weights (default: chosen on a validation part of the training split).
        #[arg(long)]
        l2: Option<f64>,
        /// Write the held-out UA-only records with their scores as JSON lines (input of
        /// scripts/isbot-eval).
        #[arg(long)]
        holdout_out: Option<PathBuf>,
        /// Write the evaluation as JSON.
        #[arg(long)]
        report_json: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            file,
            max_features,
            previous,
            max_bytes,
            sample,
            max_bot_share,
            max_class_change,
            max_newly_human,
            max_newly_unscored,
            min_samples,
        } => {
            let bounds = EffectBounds {
                max_class_change,
                max_newly_automated: max_bot_share,
                max_newly_human,
                max_newly_unscored,
                min_samples,
            };
            if let Err(violations) = bounds.validate() {
                for v in violations.iter() {
                    eprintln!("--{}: {}", flag_of(&v.path), v.message);
                }
                return ExitCode::from(2);
            }
            let code = check(&file, max_features, previous.as_deref(), max_bytes);
            match sample {
                Some(sample) if code == ExitCode::SUCCESS => {
                    check_sample(&file, previous.as_deref(), &sample, max_bytes, &bounds)
                }
                _ => code,
            }
        }
        Command::Score { model, verified } => score(model.as_deref(), verified.as_deref()),
        Command::Train {
            data,
            output,
            seed,
            model_version,
            holdout,
            epochs,
            l2,
            holdout_out,
            report_json,
        } => {
            let config = TrainConfig {
                seed,
                model_version,
                holdout,
                epochs,
                l2,
                ..TrainConfig::default()
            };
            train_cmd(
                &data,
                &output,
                &config,
                holdout_out.as_deref(),
                report_json.as_deref(),
            )
        }
    }
}

// === check ===

/// The flag that sets an [`EffectBounds`] field (`max_newly_automated` is `--max-bot-share`,
/// the name the issue asked for).
fn flag_of(field: &str) -> String {
    match field {
        "max_newly_automated" => "max-bot-share".to_owned(),
        other => other.replace('_', "-"),
    }
}

fn store_for(path: &Path, max_bytes: u64) -> Result<Store<Model>, Rejection> {
    Store::builder("botscore")
        .format(Format::Json)
        .max_bytes(max_bytes)
        .file(path)
        .build()
}

fn print_rejection(rejection: &Rejection) {
    eprintln!("REJECTED ({}): {}", rejection.kind(), rejection.origin());
    match rejection {
        Rejection::Invalid { violations, .. } => {
            for v in violations.iter() {
                eprintln!("  - {v}");
            }
            let hidden = violations.total().saturating_sub(violations.iter().count());
            if hidden > 0 {
                eprintln!("  - ... and {hidden} more (fix these and run check again)");
            }
        }
        other => eprintln!("  - {other}"),
    }
}

fn check(path: &Path, max_features: usize, previous: Option<&Path>, max_bytes: u64) -> ExitCode {
    let store = match previous {
        None => store_for(path, max_bytes),
        Some(prev) => match store_for(prev, max_bytes) {
            Err(rejection) => {
                eprintln!("the --previous file is itself invalid:");
                print_rejection(&rejection);
                return ExitCode::from(1);
            }
            Ok(store) => {
                let bytes = match read_capped(path, max_bytes) {
                    Ok(bytes) => bytes,
                    Err(message) => {
                        eprintln!("REJECTED (io): {}\n  - {message}", path.display());
                        return ExitCode::from(1);
                    }
                };
                match store.submit(&bytes, path.display().to_string()) {
                    Ok(_) => Ok(store),
                    Err(rejection) => Err(rejection),
                }
            }
        },
    };
    let store = match store {
        Ok(store) => store,
        Err(rejection) => {
            print_rejection(&rejection);
            return ExitCode::from(1);
        }
    };
    let snapshot = store.load();
    let model = snapshot.value();
    if let Err(violations) = model.check(&Limits { max_features }) {
        eprintln!("REJECTED (invalid): {}", path.display());
        for v in violations.iter() {
            eprintln!("  - {v}");
        }
        return ExitCode::from(1);
    }
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for row in model.features() {
        match kinds.iter_mut().find(|(k, _)| *k == row.kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((row.kind.as_str(), 1)),
        }
    }
    println!("OK {}", path.display());
    println!("  schema_version: {}", model.schema_version());
    println!("  model_version:  {}", model.model_version());
    println!(
        "  features:       {} (limit {max_features})",
        model.features().len()
    );
    println!("  bias:           {}", model.bias());
    let t = model.thresholds();
    println!(
        "  thresholds:     automated <= {}, likely_automated <= {}",
        t.automated, t.likely_automated
    );
    println!("  sha256:         {}", snapshot.meta().digest);
    let ua_only = model
        .features()
        .iter()
        .filter(|r| FeatureKind::from_name(&r.kind).is_some_and(FeatureKind::is_user_agent_kind))
        .count();
    println!(
        "  user-agent features: {ua_only}, request features: {}",
        model.features().len() - ua_only
    );
    for (kind, n) in kinds {
        println!("    {kind}: {n}");
    }
    ExitCode::SUCCESS
}

/// The sample gate: FILE against the published model on the sampled requests.
fn check_sample(
    path: &Path,
    previous: Option<&Path>,
    sample: &Path,
    max_bytes: u64,
    bounds: &EffectBounds,
) -> ExitCode {
    let load = |path: &Path| -> Result<Model, String> {
        let bytes = read_capped(path, max_bytes)?;
        Model::from_json(&bytes).map_err(|e| e.to_string())
    };
    let candidate = match load(path) {
        Ok(model) => model,
        Err(message) => {
            eprintln!("REJECTED (io): {}\n  - {message}", path.display());
            return ExitCode::from(1);
        }
    };
    let active = match previous
        .map(load)
        .unwrap_or_else(|| Model::builtin().map_err(|e| format!("the built-in model: {e}")))
    {
        Ok(model) => model,
        Err(message) => {
            eprintln!("the published model cannot be read: {message}");
            return ExitCode::from(1);
        }
    };
    let text = match read_capped(sample, 256 * 1024 * 1024) {
        Ok(bytes) => bytes,
        Err(message) => {
            eprintln!("the sample {} cannot be read: {message}", sample.display());
            return ExitCode::from(1);
        }
    };
    let mut heads: Vec<SampledRequest> = Vec::new();
    for (index, line) in text.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match record_of(line) {
            Ok(head) => heads.push(head),
            Err(message) => {
                eprintln!("sample line {}: {message}", index + 1);
                return ExitCode::from(1);
            }
        }
    }
    let effect = effect::compare(&active, &candidate, heads.iter().map(SampledRequest::view));
    println!(
        "  sample:         {} requests ({} unscored by the published model); automated {} -> {}; class changed {} ({:.1}%); newly automated {} ({:.1}%); newly human {} ({:.1}% of automated); unscored by FILE {} ({:.1}%)",
        effect.compared(),
        effect.unscored,
        effect.automated_before,
        effect.automated_after,
        effect.class_changed,
        effect.class_change_share() * 100.0,
        effect.newly_automated,
        effect.newly_automated_share() * 100.0,
        effect.newly_human,
        effect.newly_human_share() * 100.0,
        effect.newly_unscored,
        effect.newly_unscored_share() * 100.0
    );
    if !bounds.is_evidence(&effect) {
        println!(
            "  (fewer than {} scored requests: no evidence either way, the gate passes)",
            bounds.min_samples
        );
    }
    match bounds.check(&effect) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("REJECTED (effect): {}\n  - {reason}", path.display());
            ExitCode::from(1)
        }
    }
}

fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

// === score ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    method: Option<String>,
    uri: Option<String>,
    version: Option<String>,
    headers: Option<Vec<(String, String)>>,
    #[serde(default, deserialize_with = "present")]
    user_agent: Option<Option<String>>,
    peer: Option<String>,
    ja4: Option<String>,
}

/// Distinguishes `"user_agent": null` (known to have none) from an absent field.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn score(model: Option<&Path>, verified: Option<&Path>) -> ExitCode {
    let scorer = match model {
        Some(path) => match store_for(path, DEFAULT_MAX_FILE_BYTES) {
            Ok(store) => Scorer::from_store(store),
            Err(rejection) => {
                print_rejection(&rejection);
                return ExitCode::from(1);
            }
        },
        None => match Scorer::builtin() {
            Ok(scorer) => scorer,
            Err(e) => {
                eprintln!("the built-in model is unusable: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let verified = match verified.map(load_verified).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(message) => {
            eprintln!("verified-bot list rejected: {message}");
            return ExitCode::from(1);
        }
    };
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut buf = Vec::with_capacity(4096);
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let read = match (&mut input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(n) => n,
            Err(e) => {
                eprintln!("reading stdin: {e}");
                return ExitCode::from(1);
            }
        };
        if read == 0 {
            break;
        }
        line_no += 1;
        let result = if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            // Skip the rest of the overlong line so the next output lines stay aligned.
            if let Err(e) = skip_line(&mut input) {
                eprintln!("reading stdin: {e}");
                return ExitCode::from(1);
            }
            Err(format!("line exceeds {MAX_LINE_BYTES} bytes"))
        } else {
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            score_line(line, &scorer, &verified)
        };
        let value = match result {
            Ok(value) => value,
            Err(message) => json!({ "error": format!("line {line_no}: {message}") }).to_string(),
        };
        if writeln!(out, "{value}").is_err() {
            // stdout closed (e.g. piped into `head`): stop quietly.
            return ExitCode::SUCCESS;
        }
        // Flush when no more input is waiting, so interactive use sees each answer.
        if input.fill_buf().map(|b| b.is_empty()).unwrap_or(true) && out.flush().is_err() {
            return ExitCode::SUCCESS;
        }
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}

fn skip_line(input: &mut impl BufRead) -> io::Result<()> {
    loop {
        let (done, used) = {
            let available = input.fill_buf()?;
            if available.is_empty() {
                return Ok(());
            }
            match available.iter().position(|b| *b == b'\n') {
                Some(i) => (true, i + 1),
                None => (false, available.len()),
            }
        };
        input.consume(used);
        if done {
            return Ok(());
        }
    }
}

fn load_verified(path: &Path) -> Result<VerifiedBots, String> {
    let bytes = read_capped(path, DEFAULT_MAX_FILE_BYTES)?;
    let mut bots: VerifiedBots = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    bots.validate().map_err(|v| v.to_string())?;
    bots.prepare();
    Ok(bots)
}

/// One record line (`score`'s input format) as an owned request head.
fn record_of(line: &[u8]) -> Result<SampledRequest, String> {
    let record: Record = serde_json::from_slice(line).map_err(|e| format!("not a record: {e}"))?;
    let peer = record
        .peer
        .as_deref()
        .map(|p| {
            p.parse::<IpAddr>()
                .map_err(|_| format!("peer {p:?} is not an IP address"))
        })
        .transpose()?;
    let head = match (&record.headers, &record.user_agent) {
        (Some(_), Some(_)) => {
            return Err("give either \"headers\" or \"user_agent\", not both".into());
        }
        (None, Some(ua)) => SampledRequest::user_agent_only(ua.as_deref()),
        (Some(list), None) => {
            let version = match record.version.as_deref() {
                None | Some("HTTP/1.1") => Version::HTTP_11,
                Some("HTTP/1.0") => Version::HTTP_10,
                Some("HTTP/2" | "HTTP/2.0") => Version::HTTP_2,
                Some(other) => return Err(format!("unknown version {other:?}")),
            };
            let mut map = HeaderMap::with_capacity(list.len());
            for (name, value) in list {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("invalid header name {name:?}"))?;
                let value = HeaderValue::from_str(value)
                    .map_err(|_| format!("invalid value for header {name}"))?;
                map.append(name, value);
            }
            SampledRequest::new(version, map)
        }
        (None, None) => {
            return Err("a record needs \"headers\" (a full request) or \"user_agent\"".into());
        }
    };
    Ok(head.with_peer(peer).with_ja4(record.ja4.as_deref()))
}

fn score_line(line: &[u8], scorer: &Scorer, verified: &VerifiedBots) -> Result<String, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err("empty line".into());
    }
    let record: Record = serde_json::from_slice(line).map_err(|e| format!("not a record: {e}"))?;
    let peer = record
        .peer
        .as_deref()
        .map(|p| {
            p.parse::<IpAddr>()
                .map_err(|_| format!("peer {p:?} is not an IP address"))
        })
        .transpose()?;
    let headers;
    let view = match (&record.headers, &record.user_agent) {
        (Some(_), Some(_)) => {
            return Err("give either \"headers\" or \"user_agent\", not both".into());
        }
        (None, Some(ua)) => {
            if record.method.is_some() || record.uri.is_some() || record.version.is_some() {
                return Err("a \"user_agent\" record takes no method, uri or version".into());
            }
            RequestView::user_agent_only(ua.as_deref())
        }
        (Some(list), None) => {
            if let Some(method) = &record.method {
                http::Method::from_bytes(method.as_bytes())
                    .map_err(|_| format!("invalid method {method:?}"))?;
            }
            if let Some(uri) = &record.uri {
                uri.parse::<http::Uri>()
                    .map_err(|_| format!("invalid uri {uri:?}"))?;
            }
            let version = match record.version.as_deref() {
                None | Some("HTTP/1.1") => Version::HTTP_11,
                Some("HTTP/1.0") => Version::HTTP_10,
                Some("HTTP/0.9") => Version::HTTP_09,
                Some("HTTP/2" | "HTTP/2.0") => Version::HTTP_2,
                Some("HTTP/3" | "HTTP/3.0") => Version::HTTP_3,
                Some(other) => return Err(format!("unknown version {other:?}")),
            };
            let mut map = HeaderMap::with_capacity(list.len());
            for (name, value) in list {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("invalid header name {name:?}"))?;
                let value = HeaderValue::from_str(value)
                    .map_err(|_| format!("invalid value for header {name}"))?;
                map.append(name, value);
            }
            headers = map;
            RequestView::new(version, &headers)
        }
        (None, None) => {
            return Err("a record needs \"headers\" (a full request) or \"user_agent\"".into());
        }
    };
    let view = view.with_peer(peer).with_ja4(record.ja4.as_deref());
    let scored = scorer.score(&view).map_err(|e| e.to_string())?;
    let verified_bot = verified.matches(view.user_agent(), view.peer()).is_some();
    let output = Output {
        score: scored.score().get(),
        verified_bot,
        reasons: scored
            .reasons()
            .iter()
            .map(|r| ReasonOut {
                feature: r.feature(),
                contribution: (r.contribution() * 1000.0).round() / 1000.0,
            })
            .collect(),
    };
    serde_json::to_string(&output).map_err(|e| e.to_string())
}

/// One output line; a struct so the keys come out in this order.
#[derive(serde::Serialize)]
struct Output<'a> {
    score: u8,
    verified_bot: bool,
    reasons: Vec<ReasonOut<'a>>,
}

#[derive(serde::Serialize)]
struct ReasonOut<'a> {
    feature: &'a str,
    contribution: f64,
}

// === train ===

fn train_cmd(
    data_dir: &Path,
    output: &Path,
    config: &TrainConfig,
    holdout_out: Option<&Path>,
    report_json: Option<&Path>,
) -> ExitCode {
    if !(0.0..1.0).contains(&config.holdout) || config.holdout <= 0.0 {
        eprintln!("--holdout must be in (0, 1), got {}", config.holdout);
        return ExitCode::from(2);
    }
    let data = match Dataset::load(data_dir, config.seed, config.holdout) {
        Ok(data) => data,
        Err(e) => {
            eprintln!("cannot load training data: {e}");
            return ExitCode::from(1);
        }
    };
    let mut config = config.clone();
    match dataset::load_ja4_clients(data_dir) {
        Ok(Some(captures)) => {
            config.priors.extend(train::ja4_priors(&captures));
            eprintln!(
                "ja4: {} captured fingerprints -> {} ja4_stack_mismatch rows (prior weight {})",
                captures.len(),
                config.priors.len(),
                train::JA4_STACK_MISMATCH_WEIGHT
            );
        }
        Ok(None) => eprintln!(
            "ja4: no {} in the data directory: the model gets no ja4_stack_mismatch rows",
            dataset::JA4_CLIENTS_FILE
        ),
        Err(e) => {
            eprintln!("cannot load training data: {e}");
            return ExitCode::from(1);
        }
    }
    let config = &config;
    eprintln!(
        "data: {} UAs ({} held out) from {}",
        data.samples.len(),
        data.held_out().count(),
        data_dir.display()
    );
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut on_progress = |p: Progress| match p {
        Progress::Extract { done, total } => {
            bar.set_message("features");
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        Progress::Fit {
            epoch,
            epochs,
            loss,
        } => {
            bar.set_message(format!("fit {loss:.4}"));
            bar.set_length(u64::from(epochs));
            bar.set_position(u64::from(epoch));
        }
    };
    let trained = match train::train(&data, config, &mut on_progress) {
        Ok(t) => t,
        Err(e) => {
            bar.abandon();
            eprintln!("training failed: {e}");
            return ExitCode::from(1);
        }
    };
    bar.finish_and_clear();
    let json_text = match trained.model.to_json() {
        Ok(text) => text + "\n",
        Err(e) => {
            eprintln!("cannot serialise the model: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::write(output, &json_text) {
        eprintln!("cannot write {}: {e}", output.display());
        return ExitCode::from(1);
    }
    println!(
        "wrote {} ({} features, model_version {}, {} training examples, l2 {})",
        output.display(),
        trained.model.features().len(),
        trained.model.model_version(),
        trained.training_examples,
        trained.l2
    );
    for (l2, loss) in &trained.l2_validation {
        println!("  l2 {l2}: validation log loss {loss:.5}");
    }
    print!("{}", trained.report);
    if let Some(path) = report_json {
        let text = serde_json::to_string_pretty(&trained.report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if let Some(path) = holdout_out {
        let mut lines = String::new();
        for sample in data.held_out() {
            let score = trained
                .model
                .score(&RequestView::user_agent_only(Some(&sample.user_agent)))
                .map(|s| s.score().get());
            let Ok(score) = score else { continue };
            let line = json!({
                "ua": sample.user_agent,
                "source": sample.source.as_str(),
                "weight": sample.weight,
                "score": score,
            });
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        if let Err(e) = std::fs::write(path, lines) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
