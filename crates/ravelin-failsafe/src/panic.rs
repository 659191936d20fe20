//! Panic containment for guards, and an optional process-wide panic hook that keeps contained
//! panics from flooding stderr.

use std::any::Any;
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::panic::{AssertUnwindSafe, UnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    /// Whether this thread is inside a guard's `check` or a poll of its future. `const`
    /// initialised and without a destructor: reading it is a plain thread-local access.
    static IN_GUARD: Cell<bool> = const { Cell::new(false) };
    /// Where the last contained panic on this thread happened, left by [`install_panic_hook`].
    static LOCATION: Cell<Option<String>> = const { Cell::new(None) };
}

/// A contained panic: its message and, when the Ravelin panic hook is installed, its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PanicReport {
    pub(crate) message: Cow<'static, str>,
    pub(crate) location: Option<String>,
}

impl fmt::Display for PanicReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "{} (at {location})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Runs `f`, turning a panic into a [`PanicReport`]. Callers wrap `f` in `AssertUnwindSafe`
/// and say at the call site why that is sound.
#[inline]
pub(crate) fn contain<R>(f: impl FnOnce() -> R + UnwindSafe) -> Result<R, PanicReport> {
    let previous = IN_GUARD.replace(true);
    let result = catch_unwind(f);
    IN_GUARD.set(previous);
    result.map_err(report)
}

#[cold]
fn report(payload: Box<dyn Any + Send>) -> PanicReport {
    // The payload as text, without a backtrace: `panic!("...")` carries a `&'static str` or a
    // `String`; anything else (`panic_any`) is named only by its absence.
    let message = match payload.downcast::<String>() {
        Ok(message) => Cow::Owned(*message),
        Err(payload) => match payload.downcast_ref::<&'static str>() {
            Some(message) => Cow::Borrowed(*message),
            None => {
                // Dropping an arbitrary payload may itself panic; contain that too, and leak
                // a payload that panics on drop rather than unwinding out of here.
                if let Err(second) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                    std::mem::forget(second);
                }
                Cow::Borrowed("panic with a non-string payload")
            }
        },
    };
    let location = LOCATION.try_with(Cell::take).ok().flatten();
    PanicReport { message, location }
}

/// Installs a process-wide panic hook that stays silent for panics contained in a guard, and
/// hands every other panic to the hook that was installed before.
///
/// Without it, Rust's default hook prints every contained panic to stderr (and captures a
/// backtrace when `RUST_BACKTRACE` is set): a guard panicking on every request would write a
/// line per request. With it, the guard layer reports panics through its rate-limited log, and
/// the hook only records where the panic happened, so that log line carries the location.
///
/// Call it once at startup in a binary (libraries should not own the process's panic hook).
/// Calling it again does nothing. Like [`std::panic::set_hook`], it must not be called from a
/// panicking thread.
pub fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_GUARD.try_with(Cell::get).unwrap_or(false) {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                let _ = LOCATION.try_with(|cell| cell.set(location));
                return;
            }
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_str_and_string_payloads() {
        let report = contain(|| panic!("static message")).unwrap_err();
        assert_eq!(report.message, "static message");
        let n = 7;
        let report = contain(move || panic!("formatted {n}")).unwrap_err();
        assert_eq!(report.message, "formatted 7");
        let report = contain(|| std::panic::panic_any(42_u32)).unwrap_err();
        assert_eq!(report.message, "panic with a non-string payload");
        assert_eq!(contain(|| 5).unwrap(), 5);
    }

    #[test]
    fn restores_the_flag_after_a_panic() {
        assert!(!IN_GUARD.get());
        let _ = contain(|| {
            assert!(IN_GUARD.get());
            let inner = contain(|| panic!("inner"));
            assert!(inner.is_err());
            assert!(IN_GUARD.get());
        });
        assert!(!IN_GUARD.get());
    }
}
