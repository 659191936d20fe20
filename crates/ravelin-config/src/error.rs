//! Why a candidate document was not installed.

use std::fmt;

/// Where a candidate document came from: named in every rejection so an operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A file on disk, read by [`Store::reload`](crate::Store::reload) or the file watcher.
    File(std::path::PathBuf),
    /// Bytes pushed through an API (an admin endpoint, a test), labelled by the caller.
    Api(String),
    /// The compiled-in default the owner started from.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Api(label) => write!(f, "api:{label}"),
            Source::Default => f.write_str("compiled-in default"),
        }
    }
}

/// The serialisation format a store parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// TOML (configuration written by people).
    Toml,
    /// JSON (files written by generators).
    Json,
}

impl Format {
    /// The lowercase name used in messages and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Toml => "toml",
            Format::Json => "json",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken rule in a document: the field path and what is wrong with it.
///
/// `path` follows the document: `features[3].weight`, `routes[0].upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending field (`features[3].weight`), or `""` for the document as a whole.
    pub path: String,
    /// What is wrong, with the limit and the actual value where there is one.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All the violations found in one document, capped at [`Violations::MAX_KEPT`] so that a document
/// with a million bad rows cannot make its own error report unbounded; the rest are counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations {
    kept: Vec<Violation>,
    total: usize,
}

impl Violations {
    /// How many violations are kept with their text; later ones are only counted.
    pub const MAX_KEPT: usize = 32;

    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A single violation.
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        let mut v = Self::new();
        v.push(path, message);
        v
    }

    /// Records a violation at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.total = self.total.saturating_add(1);
        if self.kept.len() < Self::MAX_KEPT {
            self.kept.push(Violation {
                path: path.into(),
                message: message.into(),
            });
        }
    }

    /// Records every violation of `other` (those only counted there stay counted here).
    pub fn merge(&mut self, other: Violations) {
        self.merge_under("", other);
    }

    /// Records every violation of `other` with its path nested under `section`: a document that
    /// embeds another crate's configuration reports `botscore.routes[0].prefix`, not
    /// `routes[0].prefix`. An empty `section` keeps the paths as they are.
    pub fn merge_under(&mut self, section: &str, other: Violations) {
        let hidden = other.total.saturating_sub(other.kept.len());
        for violation in other.kept {
            let path = match (section.is_empty(), violation.path.is_empty()) {
                (true, _) => violation.path,
                (false, true) => section.to_owned(),
                (false, false) => format!("{section}.{}", violation.path),
            };
            self.push(path, violation.message);
        }
        self.total = self.total.saturating_add(hidden);
    }

    /// Records a violation when `count` exceeds `limit`: `"412 entries exceeds limit 256"`.
    /// Returns `false` when the limit was exceeded, so a validator can stop walking a huge list.
    pub fn check_count(&mut self, path: &str, what: &str, count: usize, limit: usize) -> bool {
        if count > limit {
            self.push(path, format!("{count} {what} exceeds limit {limit}"));
            false
        } else {
            true
        }
    }

    /// Records a violation when `value` is NaN or infinite.
    pub fn check_finite(&mut self, path: &str, value: f64) {
        if !value.is_finite() {
            self.push(path, format!("value {value} is not finite"));
        }
    }

    /// Records a violation when `value` lies outside `range`.
    pub fn check_range<N>(&mut self, path: &str, value: N, range: std::ops::RangeInclusive<N>)
    where
        N: PartialOrd + fmt::Display + Copy,
    {
        if !range.contains(&value) {
            self.push(
                path,
                format!(
                    "value {value} is outside {}..={}",
                    range.start(),
                    range.end()
                ),
            );
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How many violations were recorded, including those not kept.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The violations kept with their text (at most [`Violations::MAX_KEPT`]).
    pub fn iter(&self) -> impl Iterator<Item = &Violation> {
        self.kept.iter()
    }

    /// `Ok(())` when empty, else `Err(self)`: the usual last line of a [`Validate`](crate::Validate) impl.
    pub fn into_result(self) -> Result<(), Violations> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.kept.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        let hidden = self.total.saturating_sub(self.kept.len());
        if hidden > 0 {
            write!(f, "; and {hidden} more")?;
        }
        Ok(())
    }
}

/// Why a candidate document was rejected. The active snapshot is unchanged in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The document is larger than the store's cap; checked before parsing.
    #[error("{name} ({origin}): {size} bytes exceeds the size limit of {limit} bytes")]
    TooLarge {
        /// The store's name.
        name: String,
        /// Where the document came from.
        origin: Source,
        /// Bytes seen (for a file still growing: at least this many).
        size: u64,
        /// The configured cap.
        limit: u64,
    },
    /// The document is empty; an empty file never means "allow all" or "block all".
    #[error("{name} ({origin}): document is empty")]
    Empty {
        /// The store's name.
        name: String,
        /// Where the document came from.
        origin: Source,
    },
    /// The source could not be read.
    #[error("{name} ({origin}): cannot read: {reason}")]
    Io {
        /// The store's name.
        name: String,
        /// Where the document came from.
        origin: Source,
        /// The operating system's message.
        reason: String,
    },
    /// The bytes are not a well-formed document of the store's type.
    #[error("{name} ({origin}): {format} parse error: {reason}")]
    Parse {
        /// The store's name.
        name: String,
        /// Where the document came from.
        origin: Source,
        /// The format the store expects.
        format: Format,
        /// The parser's message, which names the line or field.
        reason: String,
    },
    /// The document parsed but broke the owner's rules.
    #[error("{name} ({origin}): invalid: {violations}")]
    Invalid {
        /// The store's name.
        name: String,
        /// Where the document came from.
        origin: Source,
        /// What is wrong, field by field.
        violations: Violations,
    },
    /// The document carries a version older than (or equal to, with other content) the active one:
    /// an older generation arriving late must not replace a newer one.
    #[error(
        "{name} ({origin}): version {candidate} is stale: active version is {active}; publish a version greater than {active}"
    )]
    Stale {
        /// The store's name.
        name: String,
        /// Where the document came from.
        origin: Source,
        /// The candidate's version.
        candidate: u64,
        /// The active snapshot's version.
        active: u64,
    },
}

impl Rejection {
    /// A short stable name of the kind of rejection, for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::TooLarge { .. } => "too_large",
            Rejection::Empty { .. } => "empty",
            Rejection::Io { .. } => "io",
            Rejection::Parse { .. } => "parse",
            Rejection::Invalid { .. } => "invalid",
            Rejection::Stale { .. } => "stale",
        }
    }

    /// Where the rejected document came from.
    pub fn origin(&self) -> &Source {
        match self {
            Rejection::TooLarge { origin, .. }
            | Rejection::Empty { origin, .. }
            | Rejection::Io { origin, .. }
            | Rejection::Parse { origin, .. }
            | Rejection::Invalid { origin, .. }
            | Rejection::Stale { origin, .. } => origin,
        }
    }
}
