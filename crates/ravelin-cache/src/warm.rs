//! Warm restarts (`[cache.warm_restart]`): the local store's most recently used entries written
//! to a snapshot file at shutdown and read back at start.
//!
//! The file is untrusted input like any other: it is read up to a bound fixed by the
//! configuration, its checksum must match, its header's count and byte total must be within
//! the limits and agree with what follows, and every entry must decode. Anything else refuses
//! the whole file ([`SnapshotError`]), and the cache starts cold. Entries are re-admitted as
//! the shared tier's are: storability, freshness and age are recomputed with this cache's
//! rules from the stored fields and times, never trusted from the file, and an entry already
//! stale is skipped.
//!
//! Format, version 1 (integers big-endian; `bytes32` = a `u32` length, then the bytes):
//!
//! ```text
//! "RAVELIN-CACHE-SNAPSHOT\n"      magic line
//! version u8 = 1
//! count u32                        entries that follow
//! total_bytes u64                  bytes of the entries (everything up to the checksum)
//! written_at_ms u64                ms since the Unix epoch
//! count × (key bytes32, entry bytes32)   entry = SharedEntry::encode(key) (magic "RVST", v1)
//! sha256 [32]                      of everything before it
//! ```
//!
//! "Hottest" is recency: the store (`quick_cache`) keeps no per-object hit count it exposes,
//! so each stored response carries the second it was last stored or served, and a snapshot
//! keeps the most recent ones, up to `max_entries` and `max_bytes`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ravelin_primitives::{Validate, Violations};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::shared_tier::{DecodeError, SharedEntry};

/// The first line of every snapshot file.
pub const SNAPSHOT_MAGIC: &[u8] = b"RAVELIN-CACHE-SNAPSHOT\n";
/// The snapshot format version written and the only one read.
pub const SNAPSHOT_VERSION: u8 = 1;
/// The default `max_entries`.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// The default `max_bytes` (never more than the cache's `max_capacity_bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The default `save_timeout`.
pub const DEFAULT_SAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest `max_entries`.
const MAX_MAX_ENTRIES: usize = 1_000_000;
/// version, count, total bytes, written at.
const HEADER_LEN: usize = 1 + 4 + 8 + 8;
const CHECKSUM_LEN: usize = 32;
const MAX_PATH_LEN: usize = 4096;

/// Warm restarts (`[cache.warm_restart]`; absent: the cache starts cold).
///
/// ```
/// let cfg: ravelin_cache::warm::WarmRestartConfig = serde_json::from_str(r#"{
///     "path": "/var/lib/ravelin/cache.snapshot",
///     "max_entries": 10000,
///     "max_bytes": 268435456
/// }"#).unwrap();
/// ravelin_cache::Validate::validate(&cfg).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarmRestartConfig {
    /// The snapshot file (absolute). Written atomically at shutdown: a temporary file beside
    /// it, `fsync`, `rename`, `fsync` of the directory.
    pub path: PathBuf,
    /// The most entries written and read.
    pub max_entries: usize,
    /// The most bytes of entries written and read (at most the cache's `max_capacity_bytes`).
    pub max_bytes: u64,
    /// The longest a save at shutdown may take; past it shutdown goes on without it (the
    /// previous snapshot, if any, stays in place).
    #[serde(with = "humantime_serde")]
    pub save_timeout: Duration,
}

impl Default for WarmRestartConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            save_timeout: DEFAULT_SAVE_TIMEOUT,
        }
    }
}

impl WarmRestartConfig {
    /// The bounds of a save or load.
    pub fn limits(&self) -> SnapshotLimits {
        SnapshotLimits {
            max_entries: self.max_entries,
            max_bytes: self.max_bytes,
        }
    }

    /// The checks that need nothing else; `max_bytes` against the capacity is checked by
    /// [`CacheConfig`](crate::CacheConfig).
    pub(crate) fn violations(&self) -> Violations {
        let mut v = Violations::new();
        let path = self.path.as_os_str();
        if path.is_empty() {
            v.push("path", "required: the absolute path of the snapshot file");
        } else if path.len() > MAX_PATH_LEN {
            v.push(
                "path",
                format!("{} bytes exceeds limit {MAX_PATH_LEN}", path.len()),
            );
        } else if !self.path.is_absolute() {
            v.push(
                "path",
                format!("{:?} is not an absolute path", self.path.display()),
            );
        } else if self.path.file_name().is_none() {
            v.push(
                "path",
                format!("{:?} does not name a file", self.path.display()),
            );
        }
        v.check_range("max_entries", self.max_entries, 1..=MAX_MAX_ENTRIES);
        if self.max_bytes == 0 {
            v.push("max_bytes", "value 0 is outside 1..=max_capacity_bytes");
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&self.save_timeout) {
            v.push(
                "save_timeout",
                format!("{:?} is outside 100ms..=300s", self.save_timeout),
            );
        }
        v
    }
}

impl Validate for WarmRestartConfig {
    fn validate(&self) -> Result<(), Violations> {
        self.violations().into_result()
    }
}

/// The bounds of one snapshot, written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotLimits {
    /// The most entries.
    pub max_entries: usize,
    /// The most bytes of entries (keys and encoded entries, without the header and checksum).
    pub max_bytes: u64,
}

impl Default for SnapshotLimits {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// What a save or a load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SnapshotReport {
    /// Entries written (save) or re-admitted into the store (load).
    pub entries: u64,
    /// Bytes of entries written or read.
    pub bytes: u64,
    /// Entries left out: stale at the time (save or load), refused by this cache's rules
    /// (load), or past a bound (save).
    pub skipped: u64,
    /// When the snapshot was written (its header's time, on load).
    pub written_at: Option<SystemTime>,
}

/// Why a snapshot file was refused (whole: nothing of it is loaded).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// There is no file (a first start).
    #[error("no snapshot file")]
    Missing,
    /// The file could not be read.
    #[error("snapshot unreadable: {0}")]
    Io(#[from] std::io::Error),
    /// Not a snapshot (wrong magic line).
    #[error("not a cache snapshot (bad magic line)")]
    BadMagic,
    /// A version this proxy does not read.
    #[error("snapshot version {0} is not read by this version (only {SNAPSHOT_VERSION})")]
    UnknownVersion(u8),
    /// Shorter than its header says (a write cut short).
    #[error("snapshot truncated")]
    Truncated,
    /// The checksum does not match the contents (altered or partly written).
    #[error("snapshot checksum mismatch")]
    Checksum,
    /// Larger than the configured bounds.
    #[error("snapshot exceeds the bounds: {0}")]
    Oversized(String),
    /// The header disagrees with the contents, or an entry does not decode.
    #[error("snapshot malformed: {0}")]
    Malformed(String),
}

impl SnapshotError {
    /// For logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Io(_) => "io",
            Self::BadMagic => "bad-magic",
            Self::UnknownVersion(_) => "unknown-version",
            Self::Truncated => "truncated",
            Self::Checksum => "checksum",
            Self::Oversized(_) => "oversized",
            Self::Malformed(_) => "malformed",
        }
    }
}

// === impl CacheHandle ===

impl crate::CacheHandle {
    /// Writes the most recently used fresh entries (within `limits`) to `path`, atomically.
    /// Blocking file I/O: call it from a blocking thread (`spawn_blocking`), with a timeout
    /// where it must not hold anything up.
    ///
    /// # Errors
    /// The file could not be written (the previous one, if any, is left in place).
    pub fn save_snapshot(
        &self,
        path: &Path,
        limits: SnapshotLimits,
    ) -> std::io::Result<SnapshotReport> {
        let engine = &self.engine;
        let written_at = engine.now();
        let chosen = engine.choose_for_snapshot(limits);
        let file = encode(&chosen.entries, written_at);
        let outcome = write_atomically(path, &file);
        let label = engine.name().to_string();
        let result = match &outcome {
            Ok(()) => "ok",
            Err(_) => "io",
        };
        metrics::counter!("ravelin_cache_snapshot_saves_total", "cache" => label.clone(), "outcome" => result).increment(1);
        outcome?;
        let report = SnapshotReport {
            entries: chosen.entries.len() as u64,
            bytes: chosen.bytes,
            skipped: chosen.skipped,
            written_at: Some(written_at),
        };
        metrics::gauge!("ravelin_cache_snapshot_entries", "cache" => label, "op" => "save")
            .set(report.entries as f64);
        tracing::info!(
            cache = engine.name(),
            path = %path.display(),
            entries = report.entries,
            bytes = report.bytes,
            skipped = report.skipped,
            "cache snapshot written"
        );
        Ok(report)
    }

    /// Reads the snapshot at `path` and stores its entries that this cache's rules accept and
    /// that are still fresh (freshness, age and storability are recomputed, never taken from
    /// the file). A file that is missing, unreadable, past `limits`, truncated, altered or of
    /// another version is refused whole, and nothing is stored.
    ///
    /// # Errors
    /// Why the file was refused ([`SnapshotError::as_str`] for logs).
    pub fn load_snapshot(
        &self,
        path: &Path,
        limits: SnapshotLimits,
    ) -> Result<SnapshotReport, SnapshotError> {
        let engine = &self.engine;
        let label = engine.name().to_string();
        let decoded = match read(path, limits) {
            Ok(d) => d,
            Err(e) => {
                metrics::counter!("ravelin_cache_snapshot_loads_total", "cache" => label, "outcome" => e.as_str()).increment(1);
                return Err(e);
            }
        };
        let mut report = SnapshotReport {
            bytes: decoded.bytes,
            written_at: Some(decoded.written_at),
            ..SnapshotReport::default()
        };
        // Oldest first, so that the most recently used are stored last (and kept, should the
        // store be smaller than the snapshot).
        for (key, entry) in decoded.entries.into_iter().rev() {
            if engine.readmit(&key, entry) {
                report.entries += 1;
            } else {
                report.skipped += 1;
            }
        }
        let u = engine.store.usage();
        engine.stats.usage(u.entries, u.bytes);
        metrics::counter!("ravelin_cache_snapshot_loads_total", "cache" => label.clone(), "outcome" => "ok").increment(1);
        metrics::gauge!("ravelin_cache_snapshot_entries", "cache" => label, "op" => "load")
            .set(report.entries as f64);
        Ok(report)
    }
}

// === encoding ===

/// Encodes a snapshot of `entries` (already within `limits`: the caller chose them).
pub(crate) fn encode(entries: &[(Box<str>, Vec<u8>)], written_at: SystemTime) -> Vec<u8> {
    let total: usize = entries.iter().map(|(k, e)| 8 + k.len() + e.len()).sum();
    let mut out = Vec::with_capacity(SNAPSHOT_MAGIC.len() + HEADER_LEN + total + CHECKSUM_LEN);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.push(SNAPSHOT_VERSION);
    out.extend_from_slice(
        &u32::try_from(entries.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&(total as u64).to_be_bytes());
    let ms = written_at
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    out.extend_from_slice(&ms.to_be_bytes());
    for (key, entry) in entries {
        for part in [key.as_bytes(), entry.as_slice()] {
            out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// A decoded snapshot: its time and its entries with their keys.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) written_at: SystemTime,
    pub(crate) bytes: u64,
    pub(crate) entries: Vec<(String, SharedEntry)>,
}

/// The largest file a snapshot within `limits` can be.
fn max_file_len(limits: SnapshotLimits) -> u64 {
    (SNAPSHOT_MAGIC.len() + HEADER_LEN + CHECKSUM_LEN) as u64 + limits.max_bytes
}

/// Decodes a whole snapshot; any fault refuses it all. Never panics.
pub(crate) fn decode(bytes: &[u8], limits: SnapshotLimits) -> Result<Decoded, SnapshotError> {
    if bytes.len() as u64 > max_file_len(limits) {
        return Err(SnapshotError::Oversized(format!(
            "{} bytes exceeds {} (max_bytes {} plus header)",
            bytes.len(),
            max_file_len(limits),
            limits.max_bytes
        )));
    }
    let Some(rest) = bytes.strip_prefix(SNAPSHOT_MAGIC) else {
        return Err(if SNAPSHOT_MAGIC.starts_with(bytes) {
            SnapshotError::Truncated
        } else {
            SnapshotError::BadMagic
        });
    };
    let mut r = Reader(rest);
    let version = r.u8()?;
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::UnknownVersion(version));
    }
    let count = r.u32()? as usize;
    let total = r.u64()?;
    let written_ms = r.u64()?;
    if count > limits.max_entries {
        return Err(SnapshotError::Oversized(format!(
            "{count} entries exceeds max_entries {}",
            limits.max_entries
        )));
    }
    if total > limits.max_bytes {
        return Err(SnapshotError::Oversized(format!(
            "{total} bytes of entries exceeds max_bytes {}",
            limits.max_bytes
        )));
    }
    // The body and the checksum must be exactly there: fewer bytes is a cut-short write.
    let body_len = usize::try_from(total).map_err(|_| SnapshotError::Truncated)?;
    if r.0.len() < body_len.saturating_add(CHECKSUM_LEN) {
        return Err(SnapshotError::Truncated);
    }
    if r.0.len() > body_len.saturating_add(CHECKSUM_LEN) {
        return Err(SnapshotError::Malformed(
            "bytes after the checksum".to_string(),
        ));
    }
    let signed_len = bytes.len() - CHECKSUM_LEN;
    let (signed, checksum) = bytes.split_at(signed_len);
    if Sha256::digest(signed).as_slice() != checksum {
        return Err(SnapshotError::Checksum);
    }
    let mut body = Reader(r.0.get(..body_len).unwrap_or_default());
    let mut entries = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let key = body.bytes32()?;
        let value = body.bytes32()?;
        let entry = SharedEntry::decode(key, value, value.len()).map_err(|e: DecodeError| {
            SnapshotError::Malformed(format!("entry {i}: {}", e.as_str()))
        })?;
        let key = std::str::from_utf8(key)
            .map_err(|_| SnapshotError::Malformed(format!("entry {i}: key is not UTF-8")))?;
        entries.push((key.to_string(), entry));
    }
    if !body.0.is_empty() {
        return Err(SnapshotError::Malformed(format!(
            "the header says {count} entries, but bytes follow them"
        )));
    }
    let written_at = UNIX_EPOCH
        .checked_add(Duration::from_millis(written_ms))
        .ok_or_else(|| {
            SnapshotError::Malformed(format!("written at {written_ms} ms: out of range"))
        })?;
    Ok(Decoded {
        written_at,
        bytes: total,
        entries,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn bytes32(&mut self) -> Result<&'a [u8], SnapshotError> {
        let n = self.u32()? as usize;
        // Inside a checksummed body whose length the header gave: a length past the end is
        // a malformed writer, not a cut-short file.
        if self.0.len() < n {
            return Err(SnapshotError::Malformed(
                "an entry's length runs past the entries".to_string(),
            ));
        }
        self.take(n)
    }
}

// === files ===

/// Reads `path`, at most what `limits` allow.
pub(crate) fn read(path: &Path, limits: SnapshotLimits) -> Result<Decoded, SnapshotError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SnapshotError::Missing),
        Err(e) => return Err(SnapshotError::Io(e)),
    };
    let bound = max_file_len(limits);
    let mut bytes = Vec::new();
    file.take(bound.saturating_add(1)).read_to_end(&mut bytes)?;
    decode(&bytes, limits)
}

/// One snapshot written at a time in this process: the temporary file's name is per process, so
/// two saves at once (a reload's background save and shutdown's) would remove and rename each
/// other's half-written file.
static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, `fsync`,
/// `rename` over `path`, then `fsync` of the directory (as `ravelin-config`'s copies are).
/// Saves in one process are serialized ([`WRITING`]).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // Nothing is left half-done under the lock by a panic that matters: a poisoned lock is
    // taken over.
    let _writing = WRITING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the snapshot path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(tmp_name);
    // A temporary left by a save that was cut short (same pid after a restart is unlikely,
    // but harmless to clear).
    let _ = std::fs::remove_file(&temporary);
    let written = write_then_rename(&temporary, path, bytes);
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn write_then_rename(temporary: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Cached responses may be private to the operator: only the owner reads them.
        options.mode(0o600);
    }
    let mut file = options.open(temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(temporary, path)?;
    #[cfg(unix)]
    {
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use proptest::prelude::*;

    fn entries(n: usize) -> Vec<(Box<str>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let key: Box<str> = format!("http://example.com/{i}").into();
                let e = SharedEntry::new(
                    StatusCode::OK,
                    HeaderMap::new(),
                    Bytes::from(vec![b'x'; 10]),
                    UNIX_EPOCH,
                    UNIX_EPOCH,
                );
                let bytes = e.encode(key.as_bytes(), usize::MAX).unwrap();
                (key, bytes)
            })
            .collect()
    }

    #[test]
    fn round_trip() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let file = encode(&entries(3), at);
        let d = decode(&file, SnapshotLimits::default()).unwrap();
        assert_eq!(d.entries.len(), 3);
        assert_eq!(d.written_at, at);
        assert_eq!(d.entries[2].0, "http://example.com/2");
        assert_eq!(&d.entries[1].1.body[..], b"xxxxxxxxxx");
    }

    #[test]
    fn a_truncated_file_is_refused_whole() {
        let file = encode(&entries(3), UNIX_EPOCH);
        for cut in [
            0,
            5,
            SNAPSHOT_MAGIC.len() + 3,
            file.len() / 2,
            file.len() - 1,
        ] {
            let e = decode(&file[..cut], SnapshotLimits::default()).unwrap_err();
            assert!(matches!(e, SnapshotError::Truncated), "cut {cut}: {e}");
        }
    }

    #[test]
    fn an_altered_byte_fails_the_checksum() {
        let mut file = encode(&entries(3), UNIX_EPOCH);
        let i = file.len() - 40;
        file[i] ^= 1;
        assert!(matches!(
            decode(&file, SnapshotLimits::default()),
            Err(SnapshotError::Checksum)
        ));
    }

    #[test]
    fn wrong_magic_and_version_are_refused() {
        let mut file = encode(&entries(1), UNIX_EPOCH);
        file[SNAPSHOT_MAGIC.len()] = 2;
        assert!(matches!(
            decode(&file, SnapshotLimits::default()),
            Err(SnapshotError::UnknownVersion(2))
        ));
        let mut file = encode(&entries(1), UNIX_EPOCH);
        file[0] = b'X';
        assert!(matches!(
            decode(&file, SnapshotLimits::default()),
            Err(SnapshotError::BadMagic)
        ));
    }

    #[test]
    fn bounds_exceeded_at_read_are_refused() {
        let file = encode(&entries(5), UNIX_EPOCH);
        let few = SnapshotLimits {
            max_entries: 4,
            max_bytes: 1 << 20,
        };
        assert!(matches!(
            decode(&file, few),
            Err(SnapshotError::Oversized(_))
        ));
        let small = SnapshotLimits {
            max_entries: 100,
            max_bytes: 64,
        };
        assert!(matches!(
            decode(&file, small),
            Err(SnapshotError::Oversized(_))
        ));
    }

    #[test]
    fn files_are_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        assert!(matches!(
            read(&path, SnapshotLimits::default()),
            Err(SnapshotError::Missing)
        ));
        write_atomically(&path, &encode(&entries(2), UNIX_EPOCH)).unwrap();
        assert_eq!(
            read(&path, SnapshotLimits::default())
                .unwrap()
                .entries
                .len(),
            2
        );
        // Nothing but the snapshot is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn config_is_validated() {
        let mut cfg = WarmRestartConfig::default();
        let v = cfg.violations();
        assert!(v.to_string().contains("path"), "{v}");
        cfg.path = "relative/snap".into();
        assert!(cfg.violations().to_string().contains("absolute"));
        cfg.path = "/var/lib/ravelin/snap".into();
        assert!(cfg.violations().is_empty());
        cfg.max_entries = 0;
        assert!(cfg.violations().to_string().contains("max_entries"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, SnapshotLimits::default());
            let mut prefixed = SNAPSHOT_MAGIC.to_vec();
            prefixed.extend_from_slice(&bytes);
            let _ = decode(&prefixed, SnapshotLimits::default());
        }

        #[test]
        fn arbitrary_bytes_under_a_valid_checksum_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            count in 0u32..8,
        ) {
            let mut file = SNAPSHOT_MAGIC.to_vec();
            file.push(SNAPSHOT_VERSION);
            file.extend_from_slice(&count.to_be_bytes());
            file.extend_from_slice(&(body.len() as u64).to_be_bytes());
            file.extend_from_slice(&0u64.to_be_bytes());
            file.extend_from_slice(&body);
            let digest = Sha256::digest(&file);
            file.extend_from_slice(&digest);
            let _ = decode(&file, SnapshotLimits::default());
        }
    }
}
