//! The validated, hot-reloaded snapshot store.

use std::collections::VecDeque;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use sha2::{Digest as _, Sha256};

use ravelin_primitives::clock::{Clock, MonotonicClock, Nanos};
use ravelin_primitives::{LogLimiter, Validate, Violations};

use crate::decode::{Decoder, Document};
use crate::error::{Format, Rejection, Source};
use crate::persist;
use crate::rollout::{
    Assignment, Canary, CohortKey, Judgement, Observation, RolloutEnd, RolloutPolicy,
    RolloutRecord, RolloutStatus, judge,
};

/// A SHA-256 digest of a document's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// The digest written as 64 hex digits ([`Display`](fmt::Display)), or `None`.
    pub fn from_hex(hex_digits: &str) -> Option<Self> {
        let bytes = hex::decode(hex_digits).ok()?;
        Some(Digest(bytes.try_into().ok()?))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex digits, enough to tell documents apart in a log line.
    pub fn short(&self) -> String {
        let full = self.to_string();
        full.get(..12).unwrap_or(&full).to_owned()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

/// What is known about an installed document.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The document's own version, when its format carries one.
    pub version: Option<u64>,
    /// SHA-256 of the bytes it was parsed from (of the empty string for a compiled-in default).
    pub digest: Digest,
    /// The size of the bytes it was parsed from (0 for a compiled-in default): what
    /// [`StoreBuilder::max_growth`] compares a candidate with.
    pub size: u64,
    /// Where it came from.
    pub source: Source,
    /// Wall-clock time of installation, for reports.
    pub loaded_at: SystemTime,
    /// Monotonic time of installation, for [`Meta::age`].
    pub installed_at: Instant,
    /// How many documents this store has installed before this one (0 for the first).
    pub generation: u64,
}

impl Meta {
    /// The metadata of a document installed (or staged) now.
    fn now(
        version: Option<u64>,
        digest: Digest,
        source: Source,
        size: u64,
        generation: u64,
    ) -> Self {
        Meta {
            version,
            digest,
            source,
            size,
            loaded_at: SystemTime::now(),
            installed_at: Instant::now(),
            generation,
        }
    }

    /// How long this document has been active.
    pub fn age(&self) -> Duration {
        self.installed_at.elapsed()
    }

    /// Whether this is the compiled-in default rather than a loaded document.
    pub fn is_default(&self) -> bool {
        self.source == Source::Default
    }

    /// Whether this is the persisted last known good ([`Source::Persisted`]), started from
    /// because the store's own source was missing or rejected at startup.
    pub fn is_persisted(&self) -> bool {
        matches!(self.source, Source::Persisted(_))
    }
}

/// An installed document with its metadata. Readers hold an `Arc<Snapshot<T>>`: a reload swaps
/// the pointer, so a reader sees the whole old document or the whole new one, never a mix.
#[derive(Debug)]
pub struct Snapshot<T> {
    value: T,
    meta: Meta,
}

impl<T> Snapshot<T> {
    /// The document.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// What is known about it.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }
}

#[cfg(test)]
impl Snapshot<()> {
    /// A snapshot of nothing whose digest is that of `bytes`.
    pub(crate) fn for_tests(bytes: &[u8]) -> Self {
        Snapshot {
            value: (),
            meta: Meta::now(None, Digest::of(bytes), Source::Default, 0, 0),
        }
    }
}

impl<T> std::ops::Deref for Snapshot<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// The active snapshot as [`Store::current`] reads it: dereferences to the [`Snapshot`].
///
/// A short-lived read guard, the cheapest read there is (no reference-count increment in the
/// common case). It is ravelin's own type, not the `arc-swap` guard it wraps, so the store can
/// change how it swaps snapshots without breaking its users. Hold it only for the duration of a
/// read: holding many at once, or one across an `.await`, makes later reads and reloads pay
/// for a slower path; [`into_arc`](Current::into_arc) (or [`Store::load`]) gives an owned
/// snapshot for that.
pub struct Current<T>(arc_swap::Guard<Arc<Snapshot<T>>>);

impl<T> Current<T> {
    /// The snapshot as an owned `Arc`, which may be kept as long as needed.
    pub fn into_arc(self) -> Arc<Snapshot<T>> {
        arc_swap::Guard::into_inner(self.0)
    }
}

impl<T> std::ops::Deref for Current<T> {
    type Target = Snapshot<T>;
    fn deref(&self) -> &Snapshot<T> {
        &self.0
    }
}

impl<T: fmt::Debug> fmt::Debug for Current<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Current").field(&**self).finish()
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The candidate passed and is now active.
    Installed {
        /// Its version, when it carries one.
        version: Option<u64>,
        /// Its digest.
        digest: Digest,
    },
    /// The candidate passed and now serves a share of clients as a canary
    /// ([`StoreBuilder::rollout`]); it is promoted or rolled back by [`Store::tick`].
    Canary {
        /// Its version, when it carries one.
        version: Option<u64>,
        /// Its digest.
        digest: Digest,
    },
    /// The candidate is byte-for-byte the active document (or the canary); nothing changed.
    Unchanged,
    /// The file changed while it was being read; nothing was installed and the next poll or reload
    /// will read it again. Writers should write a temporary file and rename it into place.
    Deferred,
}

impl Outcome {
    /// A short stable name, for metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Installed { .. } => "installed",
            Outcome::Canary { .. } => "canary",
            Outcome::Unchanged => "unchanged",
            Outcome::Deferred => "deferred",
        }
    }
}

/// A rejection as remembered by the store.
#[derive(Debug, Clone)]
pub struct RejectionRecord {
    /// Why.
    pub rejection: Rejection,
    /// Digest of the rejected bytes, when they were read.
    pub digest: Option<Digest>,
    /// When.
    pub at: SystemTime,
}

/// A point-in-time report on a store, for status pages and alerts.
#[derive(Debug, Clone)]
pub struct Status {
    /// The store's name.
    pub name: String,
    /// The active document's metadata.
    pub active: Meta,
    /// Rejections since the last successful install or unchanged reload: alert when this grows.
    pub consecutive_rejections: u64,
    /// Rejections since the store was built.
    pub total_rejections: u64,
    /// Rejections within the last [`StoreBuilder::rejection_window`] (0 when the window is
    /// off). Unlike `consecutive_rejections`, a good document does not reset it, so a source
    /// alternating good and bad files shows here: alert when it exceeds 2.
    pub rejections_window: u64,
    /// Times the active document could not be persisted to the state directory since the
    /// store was built ([`StoreBuilder::state_dir`]).
    pub persist_failures: u64,
    /// The most recent rejection since the active document was installed, if any: what is
    /// wrong with the source now, or was at its last look (a watched file that disappears is
    /// reported missing, not with the reason an earlier version of it was refused for).
    /// Installing a document clears it; an unchanged reload does not (the rejected candidate
    /// may come back).
    pub last_rejection: Option<RejectionRecord>,
    /// The rollout in progress, if a candidate is under canary.
    pub rollout: Option<RolloutStatus>,
    /// How the last finished rollout ended.
    pub last_rollout: Option<RolloutRecord>,
}

impl Status {
    /// Whether the store serves something other than a document its source offered: the
    /// compiled-in default, or the persisted last known good after the source was rejected at
    /// startup. A readiness check reports such a store "degraded" (and
    /// [`last_rejection`](Status::last_rejection) says why) until a good document is installed.
    pub fn degraded(&self) -> bool {
        self.active.is_default() || self.active.is_persisted()
    }
}

/// How a store starts when its first document is missing or invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    /// Building the store fails with the rejection: for a proxy's main config, where running on a
    /// guess would be worse than not starting.
    FailFast,
    /// The store starts from the compiled-in default and reports the rejection: for feature files,
    /// where a degraded module beats no proxy.
    UseDefault,
}

/// A clock shared by a store and its log limiter.
type SharedClock = Arc<dyn Clock<Instant = Nanos>>;

/// Builds a [`Store`]. See the [crate docs](crate) for a complete example.
#[derive(Debug)]
pub struct StoreBuilder<T> {
    name: String,
    decoder: Decoder<T>,
    max_bytes: u64,
    paths: Vec<PathBuf>,
    initial: Option<(Vec<u8>, Source)>,
    default: Option<T>,
    max_growth: Option<f64>,
    growth_floor: u64,
    refuse_versionless: bool,
    rejection_window: Option<Duration>,
    clock: SharedClock,
    state_dir: Option<PathBuf>,
    persist: bool,
    check: Option<CheckFn<T>>,
    rollout: Option<RolloutPolicy>,
    rollout_from: Option<PolicyFn<T>>,
}

/// The rollout policy a document asks for (the main config names its own).
#[derive(Clone)]
struct PolicyFn<T>(Arc<PolicyDyn<T>>);

/// The erased closure of a [`PolicyFn`].
type PolicyDyn<T> = dyn Fn(&T) -> Option<RolloutPolicy> + Send + Sync;

impl<T> fmt::Debug for PolicyFn<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PolicyFn")
    }
}

/// A pre-activation check: the active document, the candidate; `Err` refuses the candidate.
#[derive(Clone)]
struct CheckFn<T>(Arc<CheckDyn<T>>);

/// The erased closure of a [`CheckFn`].
type CheckDyn<T> = dyn Fn(&T, &T) -> Result<(), String> + Send + Sync;

impl<T> fmt::Debug for CheckFn<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckFn")
    }
}

impl<T: Validate> StoreBuilder<T> {
    /// A builder for a store called `name` (used in messages, logs and metric labels) of a serde
    /// document, parsed as TOML unless [`format`](StoreBuilder::format) says otherwise.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with(name, Decoder::serde(Format::Toml))
    }

    /// The format to parse with serde (default TOML); replaces a decoder set before.
    pub fn format(mut self, format: Format) -> Self {
        self.decoder = Decoder::serde(format);
        self
    }
}

impl<T: Document> StoreBuilder<T> {
    /// The default size cap: 1 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;
    /// The default growth bound: a file more than 4 times the active document's size is refused.
    pub const DEFAULT_MAX_GROWTH: f64 = 4.0;
    /// The default size under which an active document may grow without bound: 1 KiB.
    pub const DEFAULT_GROWTH_FLOOR: u64 = 1024;
    /// The default window of [`Status::rejections_window`]: 10 minutes.
    pub const DEFAULT_REJECTION_WINDOW: Duration = Duration::from_secs(600);
    /// The largest growth factor [`max_growth`](StoreBuilder::max_growth) accepts.
    pub const MAX_GROWTH_LIMIT: f64 = 1_000_000.0;

    /// A builder for a store called `name` whose documents are read by `decode` instead of serde:
    /// for formats serde does not read (PEM certificates, binary models), or a decoding that needs
    /// context (the files' names, a clock). `format` names the format in messages and in
    /// [`Rejection::Parse`] ([`Format::Custom`]); an `Err` from `decode` is that rejection's
    /// reason. Every other stage is the same as for serde documents: the size cap and the
    /// emptiness check come before `decode`, [`Document::validate`], the version check and
    /// [`Document::prepare`] after it.
    ///
    /// ```
    /// use ravelin_config::{Document, Rejection, StoreBuilder, Violations};
    ///
    /// /// One `key=value` per line: not TOML, not JSON.
    /// #[derive(Debug)]
    /// struct Pairs(Vec<(String, String)>);
    ///
    /// impl Document for Pairs {
    ///     fn validate(&self) -> Result<(), Violations> {
    ///         let mut v = Violations::new();
    ///         v.check_count("pairs", "entries", self.0.len(), 100);
    ///         v.into_result()
    ///     }
    /// }
    ///
    /// fn decode(bytes: &[u8]) -> Result<Pairs, String> {
    ///     let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    ///     text.lines()
    ///         .enumerate()
    ///         .map(|(i, line)| match line.split_once('=') {
    ///             Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
    ///             None => Err(format!("line {}: no '='", i + 1)),
    ///         })
    ///         .collect::<Result<_, _>>()
    ///         .map(Pairs)
    /// }
    ///
    /// let store = StoreBuilder::with_decoder("pairs", "pairs", decode)
    ///     .initial_bytes("a=1\nb=2", "inline")
    ///     .build()?;
    /// assert_eq!(store.current().0.len(), 2);
    /// let refused = store.submit(b"a=1\nb", "admin").unwrap_err();
    /// assert_eq!(refused.to_string(), "pairs (api:admin): pairs parse error: line 2: no '='");
    /// assert!(matches!(refused, Rejection::Parse { .. }));
    /// # Ok::<(), Rejection>(())
    /// ```
    pub fn with_decoder(
        name: impl Into<String>,
        format: &'static str,
        decode: impl Fn(&[u8]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Self {
        Self::with(name, Decoder::custom(format, decode))
    }

    fn with(name: impl Into<String>, decoder: Decoder<T>) -> Self {
        Self {
            name: name.into(),
            decoder,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            paths: Vec::new(),
            initial: None,
            default: None,
            max_growth: Some(Self::DEFAULT_MAX_GROWTH),
            growth_floor: Self::DEFAULT_GROWTH_FLOOR,
            refuse_versionless: true,
            rejection_window: Some(Self::DEFAULT_REJECTION_WINDOW),
            clock: Arc::new(MonotonicClock::new()),
            state_dir: None,
            persist: true,
            check: None,
            rollout: None,
            rollout_from: None,
        }
    }

    /// The size cap of a document, checked before parsing (default 1 MiB). A document of several
    /// [`files`](StoreBuilder::files) is capped as a whole.
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Reads the first document from `path`; [`Store::reload`] and [`Store::watch`] re-read it.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.paths = vec![path.into()];
        self
    }

    /// Reads each document from several files, as one: the document's bytes are the files'
    /// contents in this order (a certificate chain, then its private key). Each file is read
    /// under the size cap (what is left of it after the files before), the digest — and so the
    /// change detection of [`Store::watch`] — covers all of them, and a document is installed
    /// only when every file was read whole and none was replaced while the others were read
    /// (otherwise the reload is [`Outcome::Deferred`]). Rejections name the files
    /// ([`Source::Files`]); a file that cannot be read is named alone ([`Source::File`]).
    pub fn files<P: Into<PathBuf>>(mut self, paths: impl IntoIterator<Item = P>) -> Self {
        self.paths = paths.into_iter().map(Into::into).collect();
        self
    }

    /// Uses `bytes` as the first document (when no file is set, or as well as one: the file wins).
    pub fn initial_bytes(mut self, bytes: impl Into<Vec<u8>>, label: impl Into<String>) -> Self {
        self.initial = Some((bytes.into(), Source::Api(label.into())));
        self
    }

    /// A compiled-in default. With a default the store starts even when the first document is
    /// missing or invalid ([`Startup::UseDefault`]); without one building fails
    /// ([`Startup::FailFast`]).
    pub fn default_value(mut self, value: T) -> Self {
        self.default = Some(value);
        self
    }

    /// The growth bound (default 4): a document read from the store's file(s) more than
    /// `factor` times the size of the active document is refused as [`Rejection::Growth`],
    /// before it is parsed — a generator that duplicated its rows is caught even under the size
    /// cap, which stays. It applies only while the active document is at least
    /// [`growth_floor`](StoreBuilder::growth_floor) bytes (tiny files may grow freely) and is
    /// not the compiled-in default; at startup it compares the file with the persisted last
    /// known good ([`state_dir`](StoreBuilder::state_dir)), if any. Documents offered through
    /// [`Store::submit`] are not bounded: they come from the owner's own code or an API with
    /// checks of its own. `None` turns the bound off; [`build`](StoreBuilder::build) refuses a
    /// factor below 1, above [`MAX_GROWTH_LIMIT`](Self::MAX_GROWTH_LIMIT) or not finite.
    pub fn max_growth(mut self, factor: Option<f64>) -> Self {
        self.max_growth = factor;
        self
    }

    /// The size below which an active document may grow without bound (default 1 KiB): see
    /// [`max_growth`](StoreBuilder::max_growth).
    pub fn growth_floor(mut self, bytes: u64) -> Self {
        self.growth_floor = bytes;
        self
    }

    /// Whether, once a document with a version is active, a candidate without one is refused
    /// as [`Rejection::Unversioned`] (default `true`). Otherwise a versionless document would
    /// reset the version check and let any older generation in after it (v8, versionless, v5).
    /// A candidate with a lower version is refused either way ([`Rejection::Stale`]).
    pub fn refuse_versionless(mut self, refuse: bool) -> Self {
        self.refuse_versionless = refuse;
        self
    }

    /// The window of [`Status::rejections_window`] and the gauge
    /// `ravelin_config_rejections_window` (default 10 minutes): rejections within it, which a
    /// good document does not reset, so a source alternating good and bad files can be alerted
    /// on (`ravelin_config_rejections_window > 2`). The times are kept in a ring of at most
    /// 1,024 entries. `None` turns the window off (the gauge stays 0).
    pub fn rejection_window(mut self, window: Option<Duration>) -> Self {
        self.rejection_window = window;
        self
    }

    /// The clock of the rejection window and of the rate limit on persistence failure logs
    /// (default: the monotonic clock; tests use a `ManualClock`).
    pub fn clock(mut self, clock: impl Clock<Instant = Nanos>) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Persists every installed document to `<dir>/<name>.lkg` (the store's name reduced to
    /// letters, digits, `.`, `_` and `-`), atomically, with a header holding its digest,
    /// version and source; the directory is created if needed. At build, when the store's own
    /// source is missing or rejected, the store starts from that copy — parsed and validated
    /// again, and ignored with a log if it no longer passes — before the compiled-in default or
    /// failing: [`Meta::source`] is then [`Source::Persisted`], [`Status::last_rejection`] says
    /// why the source was refused and [`Status::degraded`] is true. The persisted copy also
    /// plays the active document's part for the source at startup: a file older than it
    /// ([`Rejection::Stale`]), without a version after it, or many times its size is refused as
    /// on a reload (delete the copy to start from the file regardless). Reading is bounded by
    /// the size cap. A copy that cannot be written is logged (at most once a minute) and
    /// counted (`ravelin_config_persist_failures_total`, [`Status::persist_failures`]), never
    /// fatal. Default: none (nothing persisted).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Whether installed documents are written to the [`state_dir`](StoreBuilder::state_dir)
    /// (default `true`). `false` reads the persisted copy as the last known good but never
    /// writes it: for a dry run such as a `--check` that should compare a file with what the
    /// running process holds.
    pub fn persist(mut self, persist: bool) -> Self {
        self.persist = persist;
        self
    }

    /// A pre-activation check: called with the active document and a candidate that passed
    /// validation and the version and growth guards, before the candidate serves anyone (not
    /// even a canary). An `Err` refuses it as [`Rejection::Refused`] with that reason, like any
    /// other rejection: the active document stays, the rejection is counted and reported. Use it
    /// for what a document alone cannot answer: its effect on a sample of recent requests, or a
    /// list that had entries and would now be empty. At startup it also compares the source
    /// with the persisted last known good ([`state_dir`](StoreBuilder::state_dir)). It runs on
    /// the control plane, under the store's reload lock: keep it bounded.
    pub fn check(
        mut self,
        check: impl Fn(&T, &T) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.check = Some(CheckFn(Arc::new(check)));
        self
    }

    /// Stages every candidate through a canary (see [`crate::rollout`]): a candidate that
    /// passes validation and the [`check`](StoreBuilder::check) serves `policy.share` of
    /// clients ([`Store::load_for`]) until [`Store::tick`] promotes it (baked within bounds)
    /// or rolls it back (its cohort did worse than the baseline). Only a promoted document is
    /// persisted. A policy with `canary = false` installs candidates at once. Default: none
    /// (install at once).
    pub fn rollout(mut self, policy: RolloutPolicy) -> Self {
        self.rollout = Some(policy);
        self
    }

    /// Takes the rollout policy from the document in force, for a document that names its own
    /// (a proxy's main config): at build, from the persisted last known good when there is one
    /// (the file on disk is the candidate, not the judge), else from the first document. Used
    /// when [`rollout`](StoreBuilder::rollout) sets none; [`Store::set_rollout`] changes it
    /// later.
    pub fn rollout_from(
        mut self,
        policy: impl Fn(&T) -> Option<RolloutPolicy> + Send + Sync + 'static,
    ) -> Self {
        self.rollout_from = Some(PolicyFn(Arc::new(policy)));
        self
    }

    /// The startup policy this builder will apply.
    pub fn startup(&self) -> Startup {
        if self.default.is_some() {
            Startup::UseDefault
        } else {
            Startup::FailFast
        }
    }

    /// Loads the first document and returns the store. When the first document is missing or
    /// rejected, the store starts from the persisted last known good
    /// ([`state_dir`](StoreBuilder::state_dir)) if there is a valid one, else from the
    /// compiled-in default if there is one, else building fails.
    ///
    /// # Errors
    /// With [`Startup::FailFast`] and no valid persisted copy, the rejection of the first
    /// document (or [`Rejection::Empty`] when no source was given at all); a
    /// [`max_growth`](StoreBuilder::max_growth) out of range, as [`Rejection::Invalid`] naming
    /// it.
    pub fn build(self) -> Result<Store<T>, Rejection> {
        let StoreBuilder {
            name,
            decoder,
            max_bytes,
            paths,
            initial,
            default,
            max_growth,
            growth_floor,
            refuse_versionless,
            rejection_window,
            clock,
            state_dir,
            persist,
            check,
            rollout,
            rollout_from,
        } = self;
        if let Some(policy) = &rollout
            && let Err(violations) = Validate::validate(policy)
        {
            return Err(Rejection::Invalid {
                name,
                origin: Source::Api("StoreBuilder::rollout".into()),
                violations,
            });
        }
        if let Some(factor) = max_growth
            && !(factor.is_finite() && (1.0..=Self::MAX_GROWTH_LIMIT).contains(&factor))
        {
            return Err(Rejection::Invalid {
                name,
                origin: Source::Api("StoreBuilder".into()),
                violations: ravelin_primitives::Violations::one(
                    "max_growth",
                    format!(
                        "{factor} is not a number from 1 to {}",
                        Self::MAX_GROWTH_LIMIT
                    ),
                ),
            });
        }
        let guards = Guards {
            max_growth,
            growth_floor,
            refuse_versionless,
            window: rejection_window,
            persist_log: LogLimiter::new(1, PERSIST_LOG_INTERVAL).with_clock(Arc::clone(&clock)),
            clock,
            lkg: state_dir.map(|dir| persist::path_in(&dir, &name)),
            persist,
            lock: None,
        };
        // One process per persisted copy: a second proxy on the same state directory is
        // refused here, whatever the startup policy (it is a deployment mistake, not a bad
        // document). A dry run (`persist(false)`) writes nothing and takes no lock.
        let mut guards = guards;
        if let (Some(path), true) = (guards.lkg.as_deref(), guards.persist) {
            match persist::lock(path) {
                Ok(lock) => guards.lock = Some(lock),
                Err(persist::LockError::Held(reason)) => {
                    return Err(Rejection::Io {
                        name,
                        origin: Source::Persisted(path.to_path_buf()),
                        reason,
                    });
                }
                // The directory is unusable: every write of the copy will fail too, and be
                // counted and logged as such (never fatal).
                Err(persist::LockError::Unusable(reason)) => {
                    tracing::warn!(store = %name, %reason, "cannot lock the persisted last known good");
                }
            }
        }
        let mut first_seen = None;
        let mut first_bytes = None;
        let first: Candidate<T> = match (files_source(&paths), initial) {
            (Some(source), _) => match read_files(&name, &paths, max_bytes) {
                Ok(FileRead::Complete(bytes)) => {
                    first_seen = Some(Seen::Bytes(Digest::of(&bytes)));
                    let parsed = parse_candidate::<T>(&name, &decoder, max_bytes, &bytes, source);
                    first_bytes = Some(bytes);
                    parsed
                }
                Ok(FileRead::Changing) => Err(Box::new((
                    Rejection::Io {
                        name: name.clone(),
                        origin: source,
                        reason: "file changed while being read at startup".into(),
                    },
                    None,
                ))),
                Err(rejection) => {
                    first_seen = Some(Seen::unreadable(&rejection));
                    Err(Box::new((rejection, None)))
                }
            },
            (None, Some((bytes, source))) => {
                let parsed = parse_candidate::<T>(&name, &decoder, max_bytes, &bytes, source);
                first_bytes = Some(bytes);
                parsed
            }
            (None, None) => Err(Box::new((
                Rejection::Empty {
                    name: name.clone(),
                    origin: Source::Default,
                },
                None,
            ))),
        };
        let persisted = guards
            .lkg
            .as_deref()
            .and_then(|path| load_persisted::<T>(&name, &decoder, max_bytes, path));
        // Files rolled back before the restart stay refused: a generator that leaves one on
        // disk must not get it served to everyone by a restart.
        let rolled_back: VecDeque<(Digest, String)> = guards
            .lkg
            .as_deref()
            .map(persist::read_rolled_back)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(digest, reason)| Some((Digest::from_hex(&digest)?, reason)))
            .collect();
        let mut rolled_back = rolled_back;
        while rolled_back.len() > ROLLED_BACK_DIGESTS {
            rolled_back.pop_front();
        }
        let first = match first {
            Ok(parsed) => match rolled_back.iter().find(|(digest, _)| *digest == parsed.1) {
                Some((digest, reason)) => Err(Box::new((
                    Rejection::RolledBack {
                        name: name.clone(),
                        origin: parsed.2,
                        reason: reason.clone(),
                    },
                    Some(*digest),
                ))),
                None => Ok(parsed),
            },
            failed => failed,
        };
        let policy = rollout.clone().or_else(|| {
            let from = rollout_from.as_ref()?;
            match (&persisted, &first) {
                (Some((value, _)), _) => (from.0)(value),
                (None, Ok(parsed)) => (from.0)(&parsed.0),
                (None, Err(_)) => None,
            }
        });
        // The persisted copy is the last known good: the source must pass against it exactly as
        // a reload would against the active document (unless it is that very document).
        let first = match (first, &persisted) {
            (Ok(parsed), Some((persisted_value, active))) if parsed.1 != active.digest => {
                let checked = guards
                    .check_growth(&name, &parsed.2, parsed.3, active)
                    .and_then(|()| {
                        guards.check_version(&name, &parsed.2, parsed.0.version(), active)
                    })
                    .and_then(|()| match &check {
                        Some(check) => (check.0)(persisted_value, &parsed.0).map_err(|reason| {
                            Rejection::Refused {
                                name: name.clone(),
                                origin: parsed.2.clone(),
                                reason,
                            }
                        }),
                        None => Ok(()),
                    });
                match checked {
                    Ok(()) => Ok(parsed),
                    Err(rejection) => Err(Box::new((rejection, Some(parsed.1)))),
                }
            }
            (first, _) => first,
        };
        // With a canary and a persisted copy, a new file at startup is a candidate like any
        // other: the copy serves everyone, the file its canary share (started below).
        let canary_at_start = policy.as_ref().is_some_and(|p| p.canary);
        let (first, staged) = match (first, &persisted) {
            (Ok(parsed), Some((_, active))) if canary_at_start && parsed.1 != active.digest => {
                (Err(None), Some(parsed))
            }
            (first, _) => (first.map_err(Some), None),
        };
        let (value, meta, first_rejection, persist_first) = match (first, persisted, default) {
            (Err(None), Some((value, meta)), _) => {
                tracing::info!(
                    store = %name,
                    version = ?meta.version,
                    digest = %meta.digest.short(),
                    "starting from the persisted last known good; the changed file goes through its canary"
                );
                (value, meta, None, false)
            }
            (Err(None), None, _) => {
                // Staging needs a persisted copy; unreachable.
                return Err(Rejection::Empty {
                    name,
                    origin: Source::Default,
                });
            }
            (Ok((value, digest, source, size)), persisted, _) => {
                let known = persisted.is_some_and(|(_, meta)| meta.digest == digest);
                let meta = Meta::now(value.version(), digest, source, size, 0);
                (value, meta, None, !known)
            }
            (Err(Some(failed)), Some((value, meta)), _) => {
                let (rejection, digest) = *failed;
                tracing::warn!(
                    store = %name,
                    source = %meta.source,
                    version = ?meta.version,
                    digest = %meta.digest.short(),
                    reason = %rejection,
                    "starting from the persisted last known good: the first document was rejected"
                );
                (value, meta, Some((rejection, digest)), false)
            }
            (Err(Some(failed)), None, None) => return Err(failed.0),
            (Err(Some(failed)), None, Some(mut value)) => {
                let (rejection, digest) = *failed;
                tracing::warn!(
                    store = %name,
                    reason = %rejection,
                    "starting from the compiled-in default: the first document was rejected"
                );
                value.prepare();
                let meta = Meta::now(value.version(), Digest::of(b""), Source::Default, 0, 0);
                (value, meta, Some((rejection, digest)), false)
            }
        };
        let (tx, _rx) = tokio::sync::watch::channel(0);
        let store = Store {
            inner: Arc::new(Inner {
                name,
                decoder,
                max_bytes,
                paths,
                active: ArcSwap::from_pointee(Snapshot { value, meta }),
                state: Mutex::new(ReloadState::default()),
                installs: tx,
                guards,
                check,
                policy: Mutex::new(policy.clone()),
                canary: ArcSwapOption::empty(),
                rollouts: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        store.publish_gauges();
        {
            let mut state = store.lock_state();
            // The watcher's first poll compares with what startup read: an unchanged file
            // (good or bad) is not parsed or counted a second time.
            state.last_seen = first_seen;
            if let Some((rejection, digest)) = first_rejection {
                store.record_rejection(&mut state, rejection, digest);
            }
            state.rolled_back = rolled_back;
            match (staged, policy, first_bytes) {
                (Some((value, digest, source, size)), Some(policy), Some(bytes)) => {
                    let generation = store.load().meta.generation.saturating_add(1);
                    store.start_canary(
                        &mut state, value, &bytes, digest, source, size, generation, policy,
                    );
                }
                (None, _, Some(bytes)) if persist_first => {
                    let active = store.load();
                    store.persist_active(&mut state, &bytes, active.meta());
                }
                _ => {}
            }
        }
        Ok(store)
    }
}

/// A validated, hot-reloadable document of type `T` with last-known-good semantics.
///
/// Reads ([`load`](Store::load), [`current`](Store::current)) are lock-free. Reloads are
/// serialised by a mutex on the control plane only. A candidate that fails any stage (size, parse,
/// validation, version) never replaces the active snapshot.
pub struct Store<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("name", &self.inner.name)
            .field("format", &self.inner.decoder.format)
            .field("max_bytes", &self.inner.max_bytes)
            .field("paths", &self.inner.paths)
            .finish_non_exhaustive()
    }
}

struct Inner<T> {
    name: String,
    decoder: Decoder<T>,
    max_bytes: u64,
    /// The files of the document, in order (empty: no file).
    paths: Vec<PathBuf>,
    active: ArcSwap<Snapshot<T>>,
    state: Mutex<ReloadState>,
    installs: tokio::sync::watch::Sender<u64>,
    guards: Guards,
    check: Option<CheckFn<T>>,
    /// The rollout policy (`None`: install at once); the control plane may change it.
    policy: Mutex<Option<RolloutPolicy>>,
    /// The candidate under canary, if any: read per request by [`Store::load_for`].
    canary: ArcSwapOption<Canary<T>>,
    /// Rollouts started, for their ids.
    rollouts: std::sync::atomic::AtomicU64,
}

/// How many rolled-back digests are remembered: offered again, they are refused.
const ROLLED_BACK_DIGESTS: usize = 16;

/// How many distinct rejected digests are remembered for log de-duplication.
const LOGGED_DIGESTS: usize = 16;
/// The most rejection times the window keeps: past it the window's count stops growing.
const WINDOW_ENTRIES: usize = 1024;
/// At most one log line per this interval about failing to persist a document.
const PERSIST_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The store's own guards beyond the size cap, parse, validation and version order: the growth
/// bound, versionless after versioned, the rejection window and persistence.
struct Guards {
    max_growth: Option<f64>,
    growth_floor: u64,
    refuse_versionless: bool,
    window: Option<Duration>,
    clock: SharedClock,
    /// `<state_dir>/<name>.lkg`, when the store has a state directory.
    lkg: Option<PathBuf>,
    /// Whether installs are written to `lkg` (false: read only, for dry runs).
    persist: bool,
    /// The lock keeping `lkg` to this process, while it persists there.
    lock: Option<Arc<persist::CopyLock>>,
    persist_log: LogLimiter,
}

impl Guards {
    /// The growth bound: a file candidate of `size` bytes against the active document.
    fn check_growth(
        &self,
        name: &str,
        source: &Source,
        size: u64,
        active: &Meta,
    ) -> Result<(), Rejection> {
        let Some(factor) = self.max_growth else {
            return Ok(());
        };
        if !matches!(source, Source::File(_) | Source::Files(_))
            || active.is_default()
            || active.size < self.growth_floor
        {
            return Ok(());
        }
        // `as` saturates; the factor is finite and at least 1 (checked by `build`).
        let limit = (active.size as f64 * factor).floor() as u64;
        if size > limit {
            return Err(Rejection::Growth {
                name: name.to_owned(),
                origin: source.clone(),
                size,
                active: active.size,
                limit,
            });
        }
        Ok(())
    }

    /// The version order: an older (or equal, with other content) version is stale, and no
    /// version after a versioned document is refused. A compiled-in default is a placeholder,
    /// not a generation: any valid document replaces it.
    fn check_version(
        &self,
        name: &str,
        source: &Source,
        candidate: Option<u64>,
        active: &Meta,
    ) -> Result<(), Rejection> {
        let Some(current) = active.version.filter(|_| !active.is_default()) else {
            return Ok(());
        };
        match candidate {
            // Equal bytes are `Unchanged` before this check, so an equal version has other content.
            Some(candidate) if candidate <= current => Err(Rejection::Stale {
                name: name.to_owned(),
                origin: source.clone(),
                candidate,
                active: current,
            }),
            None if self.refuse_versionless => Err(Rejection::Unversioned {
                name: name.to_owned(),
                origin: source.clone(),
                active: current,
            }),
            _ => Ok(()),
        }
    }

    /// Rejections within the window at this moment.
    fn window_count(&self, state: &ReloadState) -> u64 {
        let Some(window) = self.window else {
            return 0;
        };
        let now = self.clock.now();
        state.window.iter().filter(|&&at| now - at < window).count() as u64
    }

    /// Notes a rejection now, dropping the times that left the window.
    fn note_rejection(&self, state: &mut ReloadState) {
        let Some(window) = self.window else {
            return;
        };
        let now = self.clock.now();
        while state.window.front().is_some_and(|&at| now - at >= window)
            || state.window.len() >= WINDOW_ENTRIES
        {
            state.window.pop_front();
        }
        state.window.push_back(now);
    }
}

#[derive(Default)]
struct ReloadState {
    consecutive_rejections: u64,
    total_rejections: u64,
    last_rejection: Option<RejectionRecord>,
    /// Digests already logged as rejected: a generator flapping between a good and a bad file
    /// produces one log line per distinct bad document, not one per attempt.
    logged: VecDeque<Digest>,
    /// The last unreadable state logged: each is logged once until something succeeds (a file
    /// that was too large and is now missing is logged again).
    logged_unreadable: Option<String>,
    /// What the last look at the file found, so that the watcher neither parses an unchanged
    /// file again nor counts an unchanged unreadable state again on every poll.
    last_seen: Option<Seen>,
    /// When the latest rejections happened (at most [`WINDOW_ENTRIES`], oldest first).
    window: VecDeque<Nanos>,
    /// Times the active document could not be persisted.
    persist_failures: u64,
    /// How the last rollout ended.
    last_rollout: Option<RolloutRecord>,
    /// Candidates rolled back or aborted (at most [`ROLLED_BACK_DIGESTS`]): the same bytes
    /// offered again are refused rather than tried on clients a second time.
    rolled_back: VecDeque<(Digest, String)>,
}

/// What a look at the store's file found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// Bytes with this digest.
    Bytes(Digest),
    /// Nothing readable, for this reason (the rejection's message: a file that was too large
    /// and is now missing is a change of state, and is reported).
    Unreadable(String),
}

impl Seen {
    fn unreadable(rejection: &Rejection) -> Self {
        Seen::Unreadable(rejection.to_string())
    }
}

impl<T: Validate> Store<T> {
    /// Starts building a store called `name` of a serde document (see [`StoreBuilder::new`]; for
    /// a custom decoder, [`StoreBuilder::with_decoder`]).
    pub fn builder(name: impl Into<String>) -> StoreBuilder<T> {
        StoreBuilder::new(name)
    }
}

impl<T: Document> Store<T> {
    /// The store's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The file this store reads, if any (the first, when it reads several).
    pub fn path(&self) -> Option<&Path> {
        self.inner.paths.first().map(PathBuf::as_path)
    }

    /// The files this store reads as one document, in order (empty when it reads none).
    pub fn paths(&self) -> &[PathBuf] {
        &self.inner.paths
    }

    /// The active snapshot as an owned `Arc` (one atomic increment; lock-free).
    pub fn load(&self) -> Arc<Snapshot<T>> {
        self.inner.active.load_full()
    }

    /// The active snapshot through a short-lived guard: the cheapest read, for the request path.
    /// Do not hold the guard across an `.await`; use [`load`](Store::load) for that (or
    /// [`Current::into_arc`]).
    pub fn current(&self) -> Current<T> {
        Current(self.inner.active.load())
    }

    /// A receiver that changes whenever a new document is installed (its value is the generation),
    /// for owners that rebuild derived state on reload.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.installs.subscribe()
    }

    /// Offers `bytes` as the next document, e.g. from an admin endpoint.
    ///
    /// # Errors
    /// The [`Rejection`]; the active snapshot is unchanged.
    pub fn submit(&self, bytes: &[u8], label: impl Into<String>) -> Result<Outcome, Rejection> {
        let mut state = self.lock_state();
        self.offer(&mut state, bytes, Source::Api(label.into()))
    }

    /// Re-reads the store's file and installs it if it passes. Binaries wire SIGHUP and admin
    /// endpoints to this. It reads the file synchronously (the file is capped in size); from async
    /// code prefer [`reload_async`](Store::reload_async).
    ///
    /// # Errors
    /// The [`Rejection`]; the active snapshot is unchanged.
    pub fn reload(&self) -> Result<Outcome, Rejection> {
        let Some(source) = files_source(&self.inner.paths) else {
            return Err(Rejection::Io {
                name: self.inner.name.clone(),
                origin: Source::Default,
                reason: "this store has no file to reload".into(),
            });
        };
        let read = read_files(&self.inner.name, &self.inner.paths, self.inner.max_bytes);
        let mut state = self.lock_state();
        match read {
            Ok(FileRead::Complete(bytes)) => {
                state.last_seen = Some(Seen::Bytes(Digest::of(&bytes)));
                self.offer(&mut state, &bytes, source)
            }
            Ok(FileRead::Changing) => {
                metrics::counter!("ravelin_config_reloads_total", "name" => self.inner.name.clone(), "outcome" => "deferred").increment(1);
                Ok(Outcome::Deferred)
            }
            Err(rejection) => {
                // Asked for explicitly: always answered and counted. The watcher then knows
                // this state and does not count it again.
                state.last_seen = Some(Seen::unreadable(&rejection));
                self.record_rejection(&mut state, rejection.clone(), None);
                Err(rejection)
            }
        }
    }

    /// [`reload`](Store::reload) on tokio's blocking pool.
    ///
    /// # Errors
    /// The [`Rejection`]; the active snapshot is unchanged.
    pub async fn reload_async(&self) -> Result<Outcome, Rejection> {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || store.reload()).await {
            Ok(result) => result,
            Err(join) => Err(Rejection::Io {
                name: self.inner.name.clone(),
                origin: files_source(&self.inner.paths).unwrap_or(Source::Default),
                reason: format!("reload task failed: {join}"),
            }),
        }
    }

    /// Polls the store's file every `interval` and reloads it when its bytes change. The task
    /// stops when the returned handle is dropped. Must be called inside a tokio runtime.
    pub fn watch(&self, interval: Duration) -> WatchHandle {
        let store = self.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let polled = store.clone();
                // A panic here would be a bug in this crate; the JoinError keeps it from killing
                // the watcher loop, and the next tick tries again.
                let _ = tokio::task::spawn_blocking(move || {
                    polled.poll_file();
                    polled.tick();
                })
                .await;
            }
        });
        WatchHandle { task }
    }

    /// One watcher step: read the file and offer it only if its bytes differ from the last look.
    pub(crate) fn poll_file(&self) {
        let _ = self.poll();
    }

    /// One step of [`watch`](Store::watch), for callers that schedule it themselves (a thread,
    /// a timer they already run): re-reads the file(s) and offers the document only if its bytes
    /// differ from the last look; an unreadable file is counted and reported once per change of
    /// state. Unlike [`reload`](Store::reload), unchanged bytes — good or bad — are neither
    /// parsed nor counted again.
    ///
    /// Returns `None` when there was nothing new to offer (unchanged bytes, the same unreadable
    /// state, a file being written, or no file), otherwise what offering it did.
    pub fn poll(&self) -> Option<Result<Outcome, Rejection>> {
        let source = files_source(&self.inner.paths)?;
        let read = read_files(&self.inner.name, &self.inner.paths, self.inner.max_bytes);
        let mut state = self.lock_state();
        match read {
            Ok(FileRead::Complete(bytes)) => {
                let seen = Seen::Bytes(Digest::of(&bytes));
                if state.last_seen.as_ref() == Some(&seen) {
                    // Nothing new, but the window moves on: the gauge decays as time passes.
                    self.publish_window(&state);
                    return None;
                }
                state.last_seen = Some(seen);
                Some(self.offer(&mut state, &bytes, source))
            }
            Ok(FileRead::Changing) => {
                self.publish_window(&state);
                None
            }
            Err(rejection) => {
                // Unreadable (missing, too large, no permission): count and report it once per
                // change of state. Comparing with the last look, not with the last rejection,
                // is what makes a file deleted after an unrelated rejection say it is missing.
                let seen = Seen::unreadable(&rejection);
                if state.last_seen.as_ref() == Some(&seen) {
                    self.publish_window(&state);
                    return None;
                }
                state.last_seen = Some(seen);
                self.record_rejection(&mut state, rejection.clone(), None);
                Some(Err(rejection))
            }
        }
    }

    /// A report for status pages (it also brings the rejection-window gauge up to date).
    pub fn status(&self) -> Status {
        let active = self.load().meta.clone();
        let state = self.lock_state();
        let rejections_window = self.publish_window(&state);
        Status {
            name: self.inner.name.clone(),
            active,
            consecutive_rejections: state.consecutive_rejections,
            total_rejections: state.total_rejections,
            rejections_window,
            persist_failures: state.persist_failures,
            last_rejection: state.last_rejection.clone(),
            rollout: self.rollout_status(),
            last_rollout: state.last_rollout.clone(),
        }
    }

    /// Rejections within the last [`StoreBuilder::rejection_window`] (see
    /// [`Status::rejections_window`]).
    pub fn rejections_window(&self) -> u64 {
        let state = self.lock_state();
        self.publish_window(&state)
    }

    /// Where the store persists its last known good ([`StoreBuilder::state_dir`]), if anywhere.
    pub fn persisted_path(&self) -> Option<&Path> {
        self.inner.guards.lkg.as_deref()
    }

    /// The most recent rejection since the active document was installed, if any (see
    /// [`Status::last_rejection`]).
    pub fn last_rejection(&self) -> Option<RejectionRecord> {
        self.lock_state().last_rejection.clone()
    }

    /// Rejections since the last good or unchanged document.
    pub fn consecutive_rejections(&self) -> u64 {
        self.lock_state().consecutive_rejections
    }

    // === rollout ===

    /// The snapshot client `key` is served: the canary's when a rollout is in progress and the
    /// key falls in its share, the active one otherwise; with the client's [`Assignment`] while
    /// a rollout runs (file observations of this request under it, [`Store::observe`]). One
    /// atomic load when no rollout runs.
    pub fn load_for(&self, key: CohortKey) -> (Arc<Snapshot<T>>, Option<Assignment>) {
        let canary = self.inner.canary.load();
        match canary.as_deref() {
            None => (self.load(), None),
            Some(canary) => {
                let cohort = canary.cohort(key);
                let snapshot = match cohort {
                    crate::rollout::Cohort::Canary => Arc::clone(&canary.snapshot),
                    crate::rollout::Cohort::Baseline => self.load(),
                };
                let assignment = Assignment {
                    rollout: canary.id,
                    cohort,
                };
                (snapshot, Some(assignment))
            }
        }
    }

    /// Client `key`'s cohort in the rollout in progress, if any (what
    /// [`load_for`](Store::load_for) decides, without the snapshot).
    pub fn assignment(&self, key: CohortKey) -> Option<Assignment> {
        self.inner
            .canary
            .load()
            .as_deref()
            .map(|canary| Assignment {
                rollout: canary.id,
                cohort: canary.cohort(key),
            })
    }

    /// The candidate under canary, if any: for owners that build derived state (a second
    /// request stack) for the canary's clients.
    pub fn candidate(&self) -> Option<Arc<Snapshot<T>>> {
        self.inner
            .canary
            .load()
            .as_deref()
            .map(|canary| Arc::clone(&canary.snapshot))
    }

    /// Whether a candidate is under canary.
    pub fn in_rollout(&self) -> bool {
        self.inner.canary.load().is_some()
    }

    /// Files how one request of `assignment`'s cohort went. Ignored when that rollout has
    /// ended. Lock-free (a few relaxed atomic increments).
    pub fn observe(&self, assignment: Assignment, observation: &Observation) {
        if let Some(canary) = self.inner.canary.load().as_deref()
            && canary.id == assignment.rollout
        {
            canary.counters(assignment.cohort).observe(observation);
        }
    }

    /// Files a value computed for one request of `assignment`'s cohort (a bot score), whose
    /// means the cohorts compare ([`CohortBounds::max_value_shift`](crate::CohortBounds)).
    pub fn observe_value(&self, assignment: Assignment, value: f64) {
        if let Some(canary) = self.inner.canary.load().as_deref()
            && canary.id == assignment.rollout
        {
            canary.counters(assignment.cohort).observe_value(value);
        }
    }

    /// The rollout policy in force (`None`: candidates install at once).
    pub fn rollout_policy(&self) -> Option<RolloutPolicy> {
        self.policy()
    }

    /// Replaces the rollout policy, e.g. when the config that sets it is reloaded. A rollout in
    /// progress keeps the policy it started with; with `None` or `canary = false` the next
    /// candidate installs at once (and supersedes a canary still running).
    ///
    /// # Errors
    /// The policy's violations; the policy in force stays.
    pub fn set_rollout(&self, policy: Option<RolloutPolicy>) -> Result<(), Violations> {
        if let Some(policy) = &policy {
            Validate::validate(policy)?;
        }
        *self
            .inner
            .policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = policy;
        Ok(())
    }

    fn policy(&self) -> Option<RolloutPolicy> {
        self.inner
            .policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where the rollout in progress stands.
    pub fn rollout_status(&self) -> Option<RolloutStatus> {
        let canary = self.inner.canary.load_full()?;
        let now = self.inner.guards.clock.now();
        Some(RolloutStatus {
            candidate: canary.snapshot.meta.clone(),
            share: canary.policy.share,
            elapsed: now - canary.started,
            bake: canary.policy.bake,
            min_requests: canary.policy.min_requests,
            started_at: canary.started_wall,
            canary: canary.canary.health(),
            baseline: canary.baseline.health(),
        })
    }

    /// Advances the rollout in progress: rolls the candidate back as soon as its cohort is
    /// measurably worse than the baseline, promotes it once it has baked within bounds (or
    /// after `max_wait` with too little traffic to compare). [`watch`](Store::watch) calls it
    /// on every poll; a store without a watcher needs a timer that does (a second is plenty).
    /// Returns how the rollout ended, if it did.
    pub fn tick(&self) -> Option<RolloutEnd> {
        self.inner.canary.load().as_deref()?;
        let mut state = self.lock_state();
        let canary = self.inner.canary.load_full()?;
        let elapsed = self.inner.guards.clock.now() - canary.started;
        let verdict = judge(
            &canary.policy,
            &canary.canary.health(),
            &canary.baseline.health(),
        );
        let end = match verdict {
            Judgement::Worse(reason) => RolloutEnd::RolledBack(reason),
            Judgement::Within if elapsed >= canary.policy.bake => RolloutEnd::Promoted,
            Judgement::TooFew if elapsed >= canary.policy.max_wait => RolloutEnd::PromotedOnTime,
            Judgement::Within | Judgement::TooFew => return None,
        };
        self.end_rollout(&mut state, end.clone());
        Some(end)
    }

    /// Promotes the candidate under canary now, whatever its cohort shows (an operator's
    /// call, e.g. from an admin endpoint).
    ///
    /// # Errors
    /// When no rollout is in progress.
    pub fn promote(&self) -> Result<RolloutEnd, String> {
        let mut state = self.lock_state();
        if self.inner.canary.load().is_none() {
            return Err(format!("{}: no rollout in progress", self.inner.name));
        }
        self.end_rollout(&mut state, RolloutEnd::PromotedByHand);
        Ok(RolloutEnd::PromotedByHand)
    }

    /// Rolls the candidate under canary back now, for `reason` (an operator's call). The same
    /// bytes offered again are refused ([`Rejection::RolledBack`]).
    ///
    /// # Errors
    /// When no rollout is in progress.
    pub fn abort(&self, reason: impl Into<String>) -> Result<RolloutEnd, String> {
        let mut state = self.lock_state();
        if self.inner.canary.load().is_none() {
            return Err(format!("{}: no rollout in progress", self.inner.name));
        }
        let end = RolloutEnd::Aborted(reason.into());
        self.end_rollout(&mut state, end.clone());
        Ok(end)
    }

    /// The id of the rollout in progress, if any (an [`Assignment`] of it carries the same).
    pub fn rollout_id(&self) -> Option<u64> {
        self.inner.canary.load().as_deref().map(|canary| canary.id)
    }

    /// Rolls back the rollout `id` for `reason`, if it is still the one in progress (an owner
    /// that failed to prepare for one candidate must not end the next one).
    ///
    /// # Errors
    /// When rollout `id` is no longer in progress.
    pub fn abort_rollout(&self, id: u64, reason: impl Into<String>) -> Result<RolloutEnd, String> {
        let mut state = self.lock_state();
        if self.rollout_id() != Some(id) {
            return Err(format!(
                "{}: rollout {id} is no longer in progress",
                self.inner.name
            ));
        }
        let end = RolloutEnd::RolledBack(reason.into());
        self.end_rollout(&mut state, end.clone());
        Ok(end)
    }

    /// Writes the rolled-back digests beside the persisted copy (when persisting), so that a
    /// restart refuses them too.
    fn persist_rolled_back(&self, state: &mut ReloadState) {
        let guards = &self.inner.guards;
        let Some(path) = guards.lkg.as_deref().filter(|_| guards.persist) else {
            return;
        };
        let entries: Vec<(String, String)> = state
            .rolled_back
            .iter()
            .map(|(digest, reason)| (digest.to_string(), reason.clone()))
            .collect();
        if let Err(error) = persist::write_rolled_back(path, &entries) {
            state.persist_failures = state.persist_failures.saturating_add(1);
            if let Some(permit) = guards.persist_log.check() {
                tracing::warn!(
                    store = %self.inner.name,
                    %error,
                    suppressed = permit.suppressed(),
                    "cannot persist the rolled-back digests; a restart may try them again"
                );
            }
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one parsed candidate, passed from `offer` once"
    )]
    fn start_canary(
        &self,
        state: &mut ReloadState,
        value: T,
        bytes: &[u8],
        digest: Digest,
        source: Source,
        size: u64,
        generation: u64,
        policy: RolloutPolicy,
    ) -> Outcome {
        let inner = &*self.inner;
        self.end_rollout(state, RolloutEnd::Superseded);
        let version = value.version();
        let id = inner
            .rollouts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot = Arc::new(Snapshot {
            value,
            meta: Meta::now(version, digest, source, size, generation),
        });
        tracing::info!(
            store = %inner.name,
            version = ?version,
            digest = %digest.short(),
            share = policy.share,
            bake = ?policy.bake,
            "candidate passed its checks: serving it to a canary share of clients"
        );
        metrics::counter!("ravelin_config_rollout_transitions_total", "name" => inner.name.clone(), "to" => "canary").increment(1);
        metrics::gauge!("ravelin_config_rollout_in_progress", "name" => inner.name.clone())
            .set(1.0);
        let started = inner.guards.clock.now();
        inner.canary.store(Some(Arc::new(Canary::new(
            id,
            snapshot,
            bytes.to_vec(),
            policy,
            started,
        ))));
        // The source's document is now under way: whatever was wrong before is not its state.
        state.consecutive_rejections = 0;
        state.logged_unreadable = None;
        state.last_rejection = None;
        metrics::counter!("ravelin_config_reloads_total", "name" => inner.name.clone(), "outcome" => "canary").increment(1);
        self.publish_gauges_with(state);
        Outcome::Canary { version, digest }
    }

    /// Ends the rollout in progress, if any, as `end` says: installs and persists the candidate
    /// when promoted, remembers and reports it when rolled back or aborted.
    fn end_rollout(&self, state: &mut ReloadState, end: RolloutEnd) {
        let inner = &*self.inner;
        let Some(canary) = inner.canary.load_full() else {
            return;
        };
        // A promoted candidate is installed before the canary is cleared, so a canary client
        // never meets the old document in between.
        if end.promoted() {
            inner.active.store(Arc::clone(&canary.snapshot));
        }
        inner.canary.store(None);
        metrics::gauge!("ravelin_config_rollout_in_progress", "name" => inner.name.clone())
            .set(0.0);
        metrics::counter!("ravelin_config_rollout_transitions_total", "name" => inner.name.clone(), "to" => end.as_str()).increment(1);
        let meta = &canary.snapshot.meta;
        let record = RolloutRecord {
            version: meta.version,
            digest: meta.digest,
            end: end.clone(),
            at: SystemTime::now(),
            elapsed: inner.guards.clock.now() - canary.started,
            canary: canary.canary.health(),
            baseline: canary.baseline.health(),
        };
        match &end {
            RolloutEnd::Promoted | RolloutEnd::PromotedOnTime | RolloutEnd::PromotedByHand => {
                tracing::info!(
                    store = %inner.name,
                    version = ?meta.version,
                    digest = %meta.digest.short(),
                    how = end.as_str(),
                    canary_requests = record.canary.requests,
                    "candidate promoted: now serving every client"
                );
                self.persist_active(state, &canary.bytes, meta);
                inner.installs.send_replace(meta.generation);
            }
            RolloutEnd::RolledBack(reason) | RolloutEnd::Aborted(reason) => {
                if state.rolled_back.len() >= ROLLED_BACK_DIGESTS {
                    state.rolled_back.pop_front();
                }
                state.rolled_back.push_back((meta.digest, reason.clone()));
                self.persist_rolled_back(state);
                let rejection = Rejection::RolledBack {
                    name: inner.name.clone(),
                    origin: meta.source.clone(),
                    reason: reason.clone(),
                };
                if matches!(end, RolloutEnd::Aborted(_)) {
                    // An operator's call, not the source flapping: reported, not counted in
                    // the rejection window or the consecutive count.
                    tracing::warn!(store = %inner.name, %reason, "candidate aborted by hand");
                    state.last_rejection = Some(RejectionRecord {
                        rejection,
                        digest: Some(meta.digest),
                        at: SystemTime::now(),
                    });
                } else {
                    self.record_rejection(state, rejection, Some(meta.digest));
                }
            }
            RolloutEnd::Superseded => {
                tracing::info!(
                    store = %inner.name,
                    version = ?meta.version,
                    digest = %meta.digest.short(),
                    "candidate superseded by a newer one before its rollout finished"
                );
            }
        }
        state.last_rollout = Some(record);
        self.publish_gauges_with(state);
    }

    fn lock_state(&self) -> MutexGuard<'_, ReloadState> {
        // The state is plain counters and records: a panic while holding the lock cannot leave it
        // inconsistent in a way that matters, so a poisoned lock is still used.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn offer(
        &self,
        state: &mut ReloadState,
        bytes: &[u8],
        source: Source,
    ) -> Result<Outcome, Rejection> {
        let inner = &*self.inner;
        let active = self.load();
        let digest = Digest::of(bytes);
        // The persisted copy's very bytes, offered by the source again: installed (the source
        // is good again, the store no longer degraded), not compared with itself.
        let restores_persisted = active.meta.is_persisted() && digest == active.meta.digest;
        if bytes.len() as u64 <= inner.max_bytes
            && digest == active.meta.digest
            && !active.meta.is_default()
            && !restores_persisted
        {
            // The source went back to the document in force: the candidate under canary is no
            // longer what it offers, and must not be promoted later.
            self.end_rollout(state, RolloutEnd::Superseded);
            state.consecutive_rejections = 0;
            state.logged_unreadable = None;
            metrics::counter!("ravelin_config_reloads_total", "name" => inner.name.clone(), "outcome" => "unchanged").increment(1);
            self.publish_gauges_with(state);
            return Ok(Outcome::Unchanged);
        }
        if let Some(canary) = inner.canary.load().as_deref()
            && canary.snapshot.meta.digest == digest
        {
            metrics::counter!("ravelin_config_reloads_total", "name" => inner.name.clone(), "outcome" => "unchanged").increment(1);
            return Ok(Outcome::Unchanged);
        }
        if let Some((_, reason)) = state.rolled_back.iter().find(|(d, _)| *d == digest) {
            let rejection = Rejection::RolledBack {
                name: inner.name.clone(),
                origin: source,
                reason: reason.clone(),
            };
            self.record_rejection(state, rejection.clone(), Some(digest));
            return Err(rejection);
        }
        // Before parsing: a file many times the active one's size is not looked at twice.
        if bytes.len() as u64 <= inner.max_bytes
            && !restores_persisted
            && let Err(rejection) =
                inner
                    .guards
                    .check_growth(&inner.name, &source, bytes.len() as u64, &active.meta)
        {
            self.record_rejection(state, rejection.clone(), Some(digest));
            return Err(rejection);
        }
        let (value, digest, source, size) =
            match parse_candidate::<T>(&inner.name, &inner.decoder, inner.max_bytes, bytes, source)
            {
                Ok(parsed) => parsed,
                Err(failed) => {
                    let (rejection, digest) = *failed;
                    self.record_rejection(state, rejection.clone(), digest);
                    return Err(rejection);
                }
            };
        if !restores_persisted
            && let Err(rejection) =
                inner
                    .guards
                    .check_version(&inner.name, &source, value.version(), &active.meta)
        {
            self.record_rejection(state, rejection.clone(), Some(digest));
            return Err(rejection);
        }
        // A candidate older than the one under canary is stale too (v5 active, v8 canary: v7
        // must not supersede v8).
        if let Some(canary) = inner.canary.load().as_deref()
            && let (Some(under), Some(offered)) = (canary.snapshot.meta.version, value.version())
            && offered <= under
        {
            let rejection = Rejection::Stale {
                name: inner.name.clone(),
                origin: source,
                candidate: offered,
                active: under,
            };
            self.record_rejection(state, rejection.clone(), Some(digest));
            return Err(rejection);
        }
        if !restores_persisted
            && let Some(check) = &inner.check
            && let Err(reason) = (check.0)(active.value(), &value)
        {
            let rejection = Rejection::Refused {
                name: inner.name.clone(),
                origin: source,
                reason,
            };
            self.record_rejection(state, rejection.clone(), Some(digest));
            return Err(rejection);
        }
        let version = value.version();
        let generation = active.meta.generation.saturating_add(1);
        let policy = self.policy().filter(|p| p.canary);
        if let Some(policy) = policy
            && !restores_persisted
        {
            return Ok(self.start_canary(
                state, value, bytes, digest, source, size, generation, policy,
            ));
        }
        self.end_rollout(state, RolloutEnd::Superseded);
        tracing::info!(
            store = %inner.name,
            source = %source,
            version = ?version,
            digest = %digest.short(),
            "installed new document"
        );
        inner.active.store(Arc::new(Snapshot {
            value,
            meta: Meta::now(version, digest, source, size, generation),
        }));
        let installed = self.load();
        self.persist_active(state, bytes, installed.meta());
        state.consecutive_rejections = 0;
        state.logged_unreadable = None;
        // Whatever was wrong before, the source now holds a good document.
        state.last_rejection = None;
        inner.installs.send_replace(generation);
        metrics::counter!("ravelin_config_reloads_total", "name" => inner.name.clone(), "outcome" => "installed").increment(1);
        self.publish_gauges_with(state);
        Ok(Outcome::Installed { version, digest })
    }

    fn record_rejection(
        &self,
        state: &mut ReloadState,
        rejection: Rejection,
        digest: Option<Digest>,
    ) {
        let inner = &*self.inner;
        state.consecutive_rejections = state.consecutive_rejections.saturating_add(1);
        state.total_rejections = state.total_rejections.saturating_add(1);
        inner.guards.note_rejection(state);
        let first_sighting = match digest {
            Some(digest) if state.logged.contains(&digest) => false,
            Some(digest) => {
                if state.logged.len() >= LOGGED_DIGESTS {
                    state.logged.pop_front();
                }
                state.logged.push_back(digest);
                true
            }
            None => {
                let reason = rejection.to_string();
                if state.logged_unreadable.as_ref() == Some(&reason) {
                    false
                } else {
                    state.logged_unreadable = Some(reason);
                    true
                }
            }
        };
        if first_sighting {
            tracing::warn!(
                store = %inner.name,
                kind = rejection.kind(),
                digest = %digest.map(|d| d.short()).unwrap_or_default(),
                consecutive = state.consecutive_rejections,
                "rejected document, keeping the last known good: {rejection}"
            );
        }
        metrics::counter!("ravelin_config_reloads_total", "name" => inner.name.clone(), "outcome" => "rejected").increment(1);
        metrics::counter!("ravelin_config_rejections_total", "name" => inner.name.clone(), "reason" => rejection.kind()).increment(1);
        state.last_rejection = Some(RejectionRecord {
            rejection,
            digest,
            at: SystemTime::now(),
        });
        self.publish_gauges_with(state);
    }

    fn publish_gauges(&self) {
        let state = self.lock_state();
        self.publish_gauges_with(&state);
    }

    fn publish_gauges_with(&self, state: &ReloadState) {
        let name = self.inner.name.clone();
        let active = self.load();
        metrics::gauge!("ravelin_config_consecutive_rejections", "name" => name.clone())
            .set(state.consecutive_rejections as f64);
        metrics::gauge!("ravelin_config_active_version", "name" => name.clone())
            .set(active.meta.version.unwrap_or(0) as f64);
        let loaded = active
            .meta
            .loaded_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!("ravelin_config_active_loaded_timestamp_seconds", "name" => name.clone())
            .set(loaded);
        metrics::gauge!("ravelin_config_active_is_default", "name" => name.clone())
            .set(if active.meta.is_default() { 1.0 } else { 0.0 });
        metrics::gauge!("ravelin_config_active_is_persisted", "name" => name)
            .set(if active.meta.is_persisted() { 1.0 } else { 0.0 });
        self.publish_window(state);
    }

    /// Sets `ravelin_config_rejections_window` to the rejections within the window now, and
    /// returns that count.
    fn publish_window(&self, state: &ReloadState) -> u64 {
        let count = self.inner.guards.window_count(state);
        metrics::gauge!("ravelin_config_rejections_window", "name" => self.inner.name.clone())
            .set(count as f64);
        count
    }

    /// Writes the active document's `bytes` to the state directory, when there is one and
    /// persisting is on. A failure is counted and logged (at most once a minute), never fatal:
    /// the previous copy, if any, stays whole.
    fn persist_active(&self, state: &mut ReloadState, bytes: &[u8], meta: &Meta) {
        let guards = &self.inner.guards;
        let Some(path) = guards.lkg.as_deref().filter(|_| guards.persist) else {
            return;
        };
        let header = persist::header(
            &self.inner.name,
            meta.digest,
            meta.version,
            bytes,
            &meta.source,
        );
        if let Err(error) = persist::write(path, &header, bytes) {
            state.persist_failures = state.persist_failures.saturating_add(1);
            metrics::counter!("ravelin_config_persist_failures_total", "name" => self.inner.name.clone())
                .increment(1);
            if let Some(permit) = guards.persist_log.check() {
                tracing::warn!(
                    store = %self.inner.name,
                    path = %path.display(),
                    %error,
                    suppressed = permit.suppressed(),
                    "cannot persist the last known good; a restart with a bad file will not find it"
                );
            }
        }
    }
}

/// Stops a [`Store::watch`] task when dropped.
#[derive(Debug)]
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum FileRead {
    Complete(Vec<u8>),
    /// Size or modification time moved during the read: a writer is at work.
    Changing,
}

/// The source a document read from `paths` is reported as: `None` when there is no file.
fn files_source(paths: &[PathBuf]) -> Option<Source> {
    match paths {
        [] => None,
        [path] => Some(Source::File(path.clone())),
        paths => Some(Source::Files(paths.to_vec())),
    }
}

/// Reads the files of one document in order, concatenated, under one size cap. With several
/// files, a file replaced (renamed over) while a later one was read makes the read
/// [`FileRead::Changing`]: a certificate and its key rotated between the two reads are never
/// offered as a mismatched pair.
fn read_files(name: &str, paths: &[PathBuf], max_bytes: u64) -> Result<FileRead, Rejection> {
    let mut bytes = Vec::new();
    let mut read = Vec::with_capacity(paths.len());
    for path in paths {
        match read_file(name, path, max_bytes, &mut bytes)? {
            Some(metadata) => read.push((path, metadata)),
            None => return Ok(FileRead::Changing),
        }
    }
    if paths.len() > 1 {
        for (path, metadata) in read {
            match std::fs::metadata(path) {
                Ok(now) if same_file_version(&now, &metadata) => {}
                _ => return Ok(FileRead::Changing),
            }
        }
    }
    Ok(FileRead::Complete(bytes))
}

/// Whether two looks at a path saw the same version of the same file.
fn same_file_version(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
            return false;
        }
    }
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

/// Appends one file to `bytes`, reading at most what is left of `max_bytes` plus one byte, so a
/// huge or growing file is rejected without reading it all, and checks that the file did not
/// change underneath the read (`None`). Returns the metadata of the file read.
fn read_file(
    name: &str,
    path: &Path,
    max_bytes: u64,
    bytes: &mut Vec<u8>,
) -> Result<Option<std::fs::Metadata>, Rejection> {
    let source = || Source::File(path.to_path_buf());
    let io = |e: std::io::Error| Rejection::Io {
        name: name.to_owned(),
        origin: source(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => format!("the file is missing ({e})"),
            _ => e.to_string(),
        },
    };
    let before_us = bytes.len() as u64;
    let too_large = |size: u64| Rejection::TooLarge {
        name: name.to_owned(),
        origin: source(),
        size,
        limit: max_bytes,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let before = file.metadata().map_err(io)?;
    let size = before_us.saturating_add(before.len());
    if size > max_bytes {
        return Err(too_large(size));
    }
    bytes.reserve(usize::try_from(before.len()).unwrap_or(0));
    let budget = max_bytes.saturating_sub(before_us);
    let read = (&mut file)
        .take(budget.saturating_add(1))
        .read_to_end(bytes)
        .map_err(io)? as u64;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    // The same path may now name a new file (atomic rename): that is fine, we read one whole file.
    // A change of the file we read (in-place write) means the bytes may be half old, half new.
    let after = file.metadata().map_err(io)?;
    if after.len() != before.len()
        || after.len() != read
        || after.modified().ok() != before.modified().ok()
    {
        return Ok(None);
    }
    Ok(Some(after))
}

/// Size cap, emptiness, parse and validation: everything about a candidate except its relation to
/// the active snapshot.
fn parse_candidate<T: Document>(
    name: &str,
    decoder: &Decoder<T>,
    max_bytes: u64,
    bytes: &[u8],
    source: Source,
) -> Candidate<T> {
    if bytes.len() as u64 > max_bytes {
        return Err(Box::new((
            Rejection::TooLarge {
                name: name.to_owned(),
                origin: source,
                size: bytes.len() as u64,
                limit: max_bytes,
            },
            None,
        )));
    }
    let digest = Digest::of(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Box::new((
            Rejection::Empty {
                name: name.to_owned(),
                origin: source,
            },
            Some(digest),
        )));
    }
    let parse_error = |reason: String, source: Source| {
        (
            Rejection::Parse {
                name: name.to_owned(),
                origin: source,
                format: decoder.format,
                reason,
            },
            Some(digest),
        )
    };
    let mut value = match decoder.decode(bytes) {
        Ok(value) => value,
        Err(reason) => return Err(Box::new(parse_error(reason.trim_end().to_owned(), source))),
    };
    if let Err(violations) = value.validate() {
        return Err(Box::new((
            Rejection::Invalid {
                name: name.to_owned(),
                origin: source,
                violations,
            },
            Some(digest),
        )));
    }
    // Prepared as soon as it is valid: the pre-activation check evaluates the candidate as it
    // would serve (a model compiled, not a bare parse).
    value.prepare();
    Ok((value, digest, source, bytes.len() as u64))
}

/// The persisted last known good at `path`, parsed, validated and prepared again, with the
/// metadata it is installed under; `None`, logged, when it is missing, unreadable, corrupt or no
/// longer valid.
fn load_persisted<T: Document>(
    name: &str,
    decoder: &Decoder<T>,
    max_bytes: u64,
    path: &Path,
) -> Option<(T, Meta)> {
    let persisted = match persist::read(path, max_bytes) {
        Ok(persisted) => persisted?,
        Err(reason) => {
            tracing::warn!(store = %name, path = %path.display(), %reason, "ignoring the persisted last known good");
            return None;
        }
    };
    let source = Source::Persisted(path.to_path_buf());
    match parse_candidate::<T>(name, decoder, max_bytes, &persisted.bytes, source) {
        Ok((value, digest, source, size)) => {
            let meta = Meta::now(value.version(), digest, source, size, 0);
            Some((value, meta))
        }
        Err(failed) => {
            tracing::warn!(
                store = %name,
                path = %path.display(),
                saved_from = %persisted.header.source,
                reason = %failed.0,
                "ignoring the persisted last known good: it no longer passes"
            );
            None
        }
    }
}

/// A parsed and validated candidate with its digest, source and size, or why not (boxed:
/// rejections are rare and large).
type Candidate<T> = Result<(T, Digest, Source, u64), Box<(Rejection, Option<Digest>)>>;
