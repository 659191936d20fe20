//! The last known good document on disk, so that it survives a restart (failure scenario 8).
//!
//! One file per store, `<state_dir>/<store name, sanitized>.lkg`: a magic line, one line of JSON
//! (digest, version, size, source, time) and the document's bytes exactly as they were installed.
//! It is written atomically — a temporary file in the same directory, `fsync`, `rename` over the
//! old copy, `fsync` of the directory — so a crash leaves the old copy or the new one, never half
//! of either; and it is read back under the store's size cap, its digest checked, and the
//! document parsed and validated again like any other candidate.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::store::Digest;

/// The first line of every persisted copy (the format's version is its last word).
const MAGIC: &[u8] = b"ravelin-lkg 1\n";
/// The most bytes the header line may take.
const MAX_HEADER_BYTES: u64 = 16 * 1024;

/// Temporary files of one process never collide, even for two stores of the same name.
static TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// What the header line says about the persisted document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    /// The store's name, as given to the builder.
    pub(crate) store: String,
    /// SHA-256 of the document's bytes, hex.
    pub(crate) digest: String,
    /// The document's version, when it carries one.
    pub(crate) version: Option<u64>,
    /// The document's size in bytes.
    pub(crate) size: u64,
    /// Where the document was installed from.
    pub(crate) source: String,
    /// When it was persisted, seconds since the Unix epoch.
    pub(crate) saved_at_unix: u64,
}

/// A persisted copy read back: its header and the document's bytes (digest checked).
#[derive(Debug)]
pub(crate) struct Persisted {
    pub(crate) header: Header,
    pub(crate) bytes: Vec<u8>,
}

/// `<dir>/<name>.lkg`, the name reduced to `[A-Za-z0-9._-]` (anything else becomes `_`, and a
/// leading dot too, so the file is never hidden nor a path).
pub(crate) fn path_in(dir: &Path, store: &str) -> PathBuf {
    let mut name: String = store
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, '_');
    }
    dir.join(format!("{name}.lkg"))
}

/// The header of `bytes`, installed from `source`.
pub(crate) fn header(
    store: &str,
    digest: Digest,
    version: Option<u64>,
    bytes: &[u8],
    source: &crate::Source,
) -> Header {
    Header {
        store: store.to_owned(),
        digest: digest.to_string(),
        version,
        size: bytes.len() as u64,
        source: source.to_string(),
        saved_at_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// Writes `bytes` with `header` to `path` atomically (temporary file, `fsync`, `rename`, `fsync`
/// of the directory), creating the directory if needed. On failure the temporary file is removed
/// and the previous copy, if any, is untouched.
pub(crate) fn write(path: &Path, header: &Header, bytes: &[u8]) -> std::io::Result<()> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let dir = path
        .parent()
        .ok_or_else(|| invalid("the state file has no directory"))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| invalid("the state file has no name"))?
        .to_string_lossy();
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        TEMPORARY.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_then_rename(&temporary, path, header, bytes);
    if written.is_err() {
        // Gone already when the rename succeeded and only the directory's fsync failed.
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn write_then_rename(
    temporary: &Path,
    path: &Path,
    header: &Header,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Configuration may name secrets' locations; only the owner reads the copy.
        options.mode(0o600);
    }
    let mut file = options.open(temporary)?;
    let line = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    file.write_all(MAGIC)?;
    file.write_all(&line)?;
    file.write_all(b"\n")?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(temporary, path)?;
    #[cfg(unix)]
    {
        // The rename itself is durable only once the directory is.
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// Reads the copy at `path`: `Ok(None)` when there is none, `Err` with the reason when it is
/// unreadable, too large for `max_bytes`, malformed, or its bytes do not match its digest.
pub(crate) fn read(path: &Path, max_bytes: u64) -> Result<Option<Persisted>, String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let cap = max_bytes
        .saturating_add(MAX_HEADER_BYTES)
        .saturating_add(MAGIC.len() as u64);
    let mut content = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut content)
        .map_err(|e| format!("cannot read: {e}"))?;
    if content.len() as u64 > cap {
        return Err(format!(
            "larger than the size limit of {max_bytes} bytes plus its header"
        ));
    }
    let rest = content
        .strip_prefix(MAGIC)
        .ok_or("not a persisted copy (no `ravelin-lkg 1` line)")?;
    let end = rest
        .iter()
        .take(usize::try_from(MAX_HEADER_BYTES).unwrap_or(usize::MAX))
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let (line, body) = rest.split_at(end);
    let body = body.get(1..).unwrap_or_default();
    let header: Header =
        serde_json::from_slice(line).map_err(|e| format!("malformed header: {e}"))?;
    if header.size != body.len() as u64 {
        return Err(format!(
            "truncated: the header says {} bytes, the file holds {}",
            header.size,
            body.len()
        ));
    }
    let digest = Digest::of(body);
    if header.digest != digest.to_string() {
        return Err(format!(
            "corrupt: the bytes' digest is {}, the header says {}",
            digest.short(),
            header.digest.get(..12).unwrap_or(&header.digest)
        ));
    }
    Ok(Some(Persisted {
        bytes: body.to_vec(),
        header,
    }))
}

/// The lock that keeps a persisted copy to one process: `<copy>.lock`, locked exclusively (an
/// advisory `flock`) for as long as a store of this process persists to it. Two proxies sharing
/// a state directory would overwrite each other's last known good, and a restart of one could
/// start from the other's document; the second is refused at build instead. Stores of one
/// process share the lock (a store rebuilt on reload, two tests of one binary).
#[derive(Debug)]
pub(crate) struct CopyLock {
    _file: std::fs::File,
}

/// The locks this process holds, by path; a lock is released when its last store is dropped.
static LOCKS: std::sync::Mutex<Vec<(PathBuf, std::sync::Weak<CopyLock>)>> =
    std::sync::Mutex::new(Vec::new());

/// Why the lock of a persisted copy was not taken.
#[derive(Debug)]
pub(crate) enum LockError {
    /// Another process holds it: the store must not start.
    Held(String),
    /// The lock file cannot be created or locked (the directory is unusable): the copy cannot
    /// be written either, which is counted and logged as every failure to persist is.
    Unusable(String),
}

/// Takes (or shares, within this process) the lock of the persisted copy at `copy`.
///
/// # Errors
/// [`LockError::Held`] when another process holds it (with its pid, when it wrote one),
/// [`LockError::Unusable`] when it cannot be taken at all.
pub(crate) fn lock(copy: &Path) -> Result<std::sync::Arc<CopyLock>, LockError> {
    let path = PathBuf::from(format!("{}.lock", copy.display()));
    let mut locks = LOCKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    locks.retain(|(_, held)| held.strong_count() > 0);
    if let Some(held) = locks
        .iter()
        .find(|(locked, _)| *locked == path)
        .and_then(|(_, held)| held.upgrade())
    {
        return Ok(held);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            LockError::Unusable(format!(
                "cannot create the state directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| LockError::Unusable(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = (&file).take(32).read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LockError::Held(format!(
                "{} is locked by another process{}: give each running proxy its own state directory",
                path.display(),
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                }
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(LockError::Unusable(format!(
                "cannot lock {}: {e}",
                path.display()
            )));
        }
    }
    // Who holds it, for the message a second process prints (best effort).
    let _ = file.set_len(0);
    let _ = write!(file, "{}", std::process::id());
    let lock = std::sync::Arc::new(CopyLock { _file: file });
    locks.push((path, std::sync::Arc::downgrade(&lock)));
    Ok(lock)
}

/// `<copy>.rolled-back`: the digests (hex) of candidates rolled back or aborted, with why.
fn rolled_back_path(copy: &Path) -> PathBuf {
    PathBuf::from(format!("{}.rolled-back", copy.display()))
}

/// The most bytes of a rolled-back list read back.
const MAX_ROLLED_BACK_BYTES: u64 = 64 * 1024;

/// Writes the rolled-back digests beside the copy at `copy`, atomically (temporary file,
/// `fsync`, `rename`).
pub(crate) fn write_rolled_back(copy: &Path, entries: &[(String, String)]) -> std::io::Result<()> {
    let path = rolled_back_path(copy);
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no directory"))?;
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(
        ".rolled-back.{}.{}.tmp",
        std::process::id(),
        TEMPORARY.fetch_add(1, Ordering::Relaxed)
    ));
    let bytes = serde_json::to_vec(entries).map_err(std::io::Error::other)?;
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// The rolled-back digests beside the copy at `copy` (none when missing; a list that cannot be
/// read or parsed is logged and ignored).
pub(crate) fn read_rolled_back(copy: &Path) -> Vec<(String, String)> {
    let path = rolled_back_path(copy);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring the rolled-back list");
            return Vec::new();
        }
    };
    let mut content = Vec::new();
    if let Err(e) = file.take(MAX_ROLLED_BACK_BYTES).read_to_end(&mut content) {
        tracing::warn!(path = %path.display(), error = %e, "ignoring the rolled-back list");
        return Vec::new();
    }
    match serde_json::from_slice::<Vec<(String, String)>>(&content) {
        Ok(mut entries) => {
            entries.truncate(64);
            entries
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring the rolled-back list");
            Vec::new()
        }
    }
}
