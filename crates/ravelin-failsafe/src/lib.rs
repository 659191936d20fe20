#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod guard;

pub use guard::{
    Allow, Guard, GuardError, GuardErrorKind, GuardFn, PeerAddr, RequestHead, SkipReason, Skipped,
    Verdict, guard_fn,
};
