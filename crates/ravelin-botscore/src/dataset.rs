//! Loading the labelled User-Agent data and splitting it, deterministically, into training and
//! held-out parts.
//!
//! The directory holds the files described in `crates/ravelin-botscore/data/README.md`:
//! `crawlers.train.json` (crawler entries with example UAs; label bot), `browsers.train.jsonl`
//! (real browsers; label human) and `browsers-spoofed.train.jsonl` (browser-looking UAs seen only
//! from spoofing clients; label bot, never human). Beside them, `ja4-clients.json` lists TLS
//! fingerprints captured from real clients ([`load_ja4_clients`]); it labels no example and
//! becomes the `ja4_stack_mismatch` rows the trainer adds as priors
//! ([`crate::train::ja4_priors`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Largest data file read (the shipped files are well under 1 MiB).
pub const MAX_DATA_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Where a User-Agent sample comes from, which fixes its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UaSource {
    /// A crawler list entry's instance. Label: bot.
    Crawler,
    /// A real browser. Label: human.
    Browser,
    /// A browser-looking UA seen only from spoofing clients. Label: bot.
    Spoofed,
}

impl UaSource {
    /// A short stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            UaSource::Crawler => "crawler",
            UaSource::Browser => "browser",
            UaSource::Spoofed => "spoofed",
        }
    }

    /// Whether the label is human.
    pub const fn is_human(self) -> bool {
        matches!(self, UaSource::Browser)
    }
}

/// One labelled User-Agent.
#[derive(Debug, Clone, PartialEq)]
pub struct UaSample {
    /// The string.
    pub user_agent: String,
    /// Its source (and so its label).
    pub source: UaSource,
    /// Traffic weight (browsers: the data's share of traffic; others 1).
    pub weight: f64,
    /// The split unit: a crawler list entry's pattern (all instances of one bot stay on one side),
    /// otherwise the UA itself.
    pub group: String,
    /// Whether it is in the held-out split.
    pub held_out: bool,
}

/// The loaded data.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Every sample, in file order (crawlers, browsers, spoofed).
    pub samples: Vec<UaSample>,
}

/// Why the data could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_DATA_FILE_BYTES`].
    #[error("{path}: {size} bytes exceeds the limit of {MAX_DATA_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A file is not in the expected format.
    #[error("{path}:{line}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 for a whole-file JSON document).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct CrawlerEntry {
    pattern: String,
    #[serde(default)]
    instances: Vec<String>,
}

#[derive(Deserialize)]
struct BrowserLine {
    ua: String,
    #[serde(default = "one")]
    weight: f64,
}

fn one() -> f64 {
    1.0
}

impl Dataset {
    /// Loads `dir` and assigns each group to the held-out split with probability `holdout`,
    /// decided by a hash of `(seed, group)`: the same arguments always give the same split.
    ///
    /// # Errors
    /// [`DataError`] naming the file and line.
    pub fn load(dir: &Path, seed: u64, holdout: f64) -> Result<Dataset, DataError> {
        let mut samples = Vec::new();
        let crawlers_path = dir.join("crawlers.train.json");
        let text = read(&crawlers_path)?;
        let entries: Vec<CrawlerEntry> =
            serde_json::from_str(&text).map_err(|e| DataError::Format {
                path: crawlers_path.clone(),
                line: e.line(),
                message: e.to_string(),
            })?;
        // An instance listed under two entries is kept once, with the first, so it cannot land
        // on both sides of the split.
        let mut seen = std::collections::HashSet::new();
        for entry in entries {
            for ua in entry.instances {
                if !seen.insert(ua.clone()) {
                    continue;
                }
                samples.push(UaSample {
                    user_agent: ua,
                    source: UaSource::Crawler,
                    weight: 1.0,
                    group: format!("crawler:{}", entry.pattern),
                    held_out: false,
                });
            }
        }
        for (file, source) in [
            ("browsers.train.jsonl", UaSource::Browser),
            ("browsers-spoofed.train.jsonl", UaSource::Spoofed),
        ] {
            let path = dir.join(file);
            let text = read(&path)?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let parsed: BrowserLine =
                    serde_json::from_str(line).map_err(|e| DataError::Format {
                        path: path.clone(),
                        line: i.saturating_add(1),
                        message: e.to_string(),
                    })?;
                samples.push(UaSample {
                    group: format!("{}:{}", source.as_str(), parsed.ua),
                    user_agent: parsed.ua,
                    source,
                    weight: if source == UaSource::Browser {
                        parsed.weight
                    } else {
                        1.0
                    },
                    held_out: false,
                });
            }
        }
        for sample in &mut samples {
            sample.held_out = split_unit(seed, &sample.group) < holdout;
        }
        Ok(Dataset { samples })
    }

    /// Samples of the training split.
    pub fn train(&self) -> impl Iterator<Item = &UaSample> {
        self.samples.iter().filter(|s| !s.held_out)
    }

    /// Samples of the held-out split.
    pub fn held_out(&self) -> impl Iterator<Item = &UaSample> {
        self.samples.iter().filter(|s| s.held_out)
    }
}

/// The file of captured TLS fingerprints in a data directory.
pub const JA4_CLIENTS_FILE: &str = "ja4-clients.json";

/// One JA4 fingerprint captured from a real client (a `clients` entry of
/// [`JA4_CLIENTS_FILE`]; how each was captured is in the data directory's README).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ja4Capture {
    /// What connected (`chromium`, `curl`, `python3-urllib`, …).
    pub client: String,
    /// Its version, and the TLS library's, as the client reports them.
    pub version: String,
    /// The browser family (a [`crate::BrowserFamily`] name) whose TLS stack this fingerprint
    /// stands for; `None` for HTTP libraries and tools.
    pub family: Option<String>,
    /// The URL it fetched (an IP address sends no SNI, a name does).
    pub url: String,
    /// The JA4 the TLS terminator computed.
    pub ja4: String,
}

#[derive(Deserialize)]
struct Ja4ClientsFile {
    clients: Vec<Ja4Capture>,
}

/// Loads [`JA4_CLIENTS_FILE`] from `dir`; `Ok(None)` when the directory has none.
///
/// # Errors
/// [`DataError`] naming the file.
pub fn load_ja4_clients(dir: &Path) -> Result<Option<Vec<Ja4Capture>>, DataError> {
    let path = dir.join(JA4_CLIENTS_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = read(&path)?;
    let file: Ja4ClientsFile = serde_json::from_str(&text).map_err(|e| DataError::Format {
        path: path.clone(),
        line: e.line(),
        message: e.to_string(),
    })?;
    Ok(Some(file.clients))
}

fn read(path: &Path) -> Result<String, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_DATA_FILE_BYTES {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

/// A uniform number in `[0, 1)` from `(seed, key)`: FNV-1a, then a SplitMix64 finaliser.
pub fn split_unit(seed: u64, key: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    crate::synth::Rng::new(h).unit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_deterministic_and_roughly_proportional() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
        let a: Vec<bool> = keys.iter().map(|k| split_unit(1, k) < 0.25).collect();
        let b: Vec<bool> = keys.iter().map(|k| split_unit(1, k) < 0.25).collect();
        assert_eq!(a, b);
        let share = a.iter().filter(|x| **x).count() as f64 / keys.len() as f64;
        assert!((0.22..0.28).contains(&share), "{share}");
        let c: Vec<bool> = keys.iter().map(|k| split_unit(2, k) < 0.25).collect();
        assert_ne!(a, c);
    }
}
