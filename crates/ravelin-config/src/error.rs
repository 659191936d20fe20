//! Why a candidate document was not installed.

use std::fmt;

use ravelin_primitives::Violations;

/// Where a candidate document came from: named in every rejection so an operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A file on disk, read by [`Store::reload`](crate::Store::reload) or the file watcher.
    File(std::path::PathBuf),
    /// Several files read as one document, their contents in this order
    /// ([`StoreBuilder::files`](crate::StoreBuilder::files): a certificate chain and its key).
    Files(Vec<std::path::PathBuf>),
    /// Bytes pushed through an API (an admin endpoint, a test), labelled by the caller.
    Api(String),
    /// The compiled-in default the owner started from.
    Default,
    /// The last known good document persisted in the store's state directory
    /// ([`StoreBuilder::state_dir`](crate::StoreBuilder::state_dir)), started from because the
    /// store's own source was missing or rejected at startup.
    Persisted(std::path::PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Files(paths) => {
                for (i, path) in paths.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" + ")?;
                    }
                    write!(f, "{}", path.display())?;
                }
                Ok(())
            }
            Source::Api(label) => write!(f, "api:{label}"),
            Source::Default => f.write_str("compiled-in default"),
            Source::Persisted(path) => write!(f, "persisted copy {}", path.display()),
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
    /// A format read by a custom decoder, named for messages and rejections (`"pem"`): set by
    /// [`StoreBuilder::with_decoder`](crate::StoreBuilder::with_decoder). Serde has no parser
    /// for it: given to [`StoreBuilder::format`](crate::StoreBuilder::format), every document is
    /// rejected as a parse error saying the decoder is missing.
    Custom(&'static str),
}

impl Format {
    /// The lowercase name used in messages and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Toml => "toml",
            Format::Json => "json",
            Format::Custom(name) => name,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
        /// Bytes seen (for a file still growing: at least this many; for a document of several
        /// files: the files before this one included).
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
    /// The document is many times the size of the active one (a generator that duplicated its
    /// rows): refused before parsing, even under the size cap
    /// ([`StoreBuilder::max_growth`](crate::StoreBuilder::max_growth)).
    #[error(
        "{name} ({origin}): {size} bytes is more than the growth limit of {limit} bytes ({active} bytes active); if the growth is intended, raise or turn off max_growth"
    )]
    Growth {
        /// The store's name.
        name: String,
        /// Where the document came from.
        origin: Source,
        /// The candidate's size in bytes.
        size: u64,
        /// The active document's size in bytes.
        active: u64,
        /// The largest candidate accepted: the active size times the growth factor.
        limit: u64,
    },
    /// The document carries no version while the active one does: a versionless document after
    /// a versioned one would reset the version check, letting any older generation in next
    /// ([`StoreBuilder::refuse_versionless`](crate::StoreBuilder::refuse_versionless)).
    #[error(
        "{name} ({origin}): the document has no version: active version is {active}; publish a version greater than {active}"
    )]
    Unversioned {
        /// The store's name.
        name: String,
        /// Where the document came from.
        origin: Source,
        /// The active snapshot's version.
        active: u64,
    },
    /// The document passed validation but the store's pre-activation check refused it
    /// ([`StoreBuilder::check`](crate::StoreBuilder::check)): its effect on recent requests, or
    /// on the active document, is past a bound.
    #[error("{name} ({origin}): refused before activation: {reason}")]
    Refused {
        /// The store's name.
        name: String,
        /// Where the document came from.
        origin: Source,
        /// The check's reason, with its numbers.
        reason: String,
    },
    /// The document was tried on a canary share of clients and rolled back (or aborted by
    /// hand); offered again, the same bytes are refused for the same reason
    /// ([`StoreBuilder::rollout`](crate::StoreBuilder::rollout)).
    #[error("{name} ({origin}): rolled back: {reason}; publish a corrected version")]
    RolledBack {
        /// The store's name.
        name: String,
        /// Where the document came from.
        origin: Source,
        /// Why its canary was rolled back.
        reason: String,
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
            Rejection::Growth { .. } => "growth",
            Rejection::Unversioned { .. } => "unversioned",
            Rejection::Refused { .. } => "refused",
            Rejection::RolledBack { .. } => "rolled_back",
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
            | Rejection::Stale { origin, .. }
            | Rejection::Growth { origin, .. }
            | Rejection::Unversioned { origin, .. }
            | Rejection::Refused { origin, .. }
            | Rejection::RolledBack { origin, .. } => origin,
        }
    }
}
