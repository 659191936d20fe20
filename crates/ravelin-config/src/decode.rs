//! How a store turns bytes into a document: serde (TOML, JSON) or a custom decoder.

use std::fmt;
use std::sync::Arc;

use ravelin_primitives::{Validate, Violations};
use serde::de::DeserializeOwned;

use crate::error::Format;

/// What a [`Store`](crate::Store) holds: a document it can validate, version and prepare.
///
/// Every serde document ([`Validate`]) is one through a blanket implementation, so stores of
/// TOML and JSON documents need nothing more. A document read by a custom decoder
/// ([`StoreBuilder::with_decoder`](crate::StoreBuilder::with_decoder): PEM certificates, binary
/// models) implements this trait directly; the methods mean exactly what [`Validate`]'s do.
pub trait Document: Send + Sync + 'static {
    /// Checks the document; every broken rule is a violation naming its field path.
    ///
    /// # Errors
    /// The broken rules: the store rejects the document as
    /// [`Rejection::Invalid`](crate::Rejection::Invalid).
    fn validate(&self) -> Result<(), Violations>;

    /// The document's generation, when its format carries one (see [`Validate::version`]).
    fn version(&self) -> Option<u64> {
        None
    }

    /// Precomputes derived state once the document has passed validation (see
    /// [`Validate::prepare`]).
    fn prepare(&mut self) {}
}

impl<T: Validate> Document for T {
    fn validate(&self) -> Result<(), Violations> {
        Validate::validate(self)
    }

    fn version(&self) -> Option<u64> {
        Validate::version(self)
    }

    fn prepare(&mut self) {
        Validate::prepare(self);
    }
}

/// A decoding function: bytes to a document, or the decoder's message.
type DecodeFn<T> = dyn Fn(&[u8]) -> Result<T, String> + Send + Sync;

/// The decoding stage of a store: the format's name (for messages and rejections) and the
/// function from bytes to a document. An error is the decoder's message, reported as
/// [`Rejection::Parse`](crate::Rejection::Parse).
pub(crate) struct Decoder<T> {
    pub(crate) format: Format,
    decode: Arc<DecodeFn<T>>,
}

impl<T> Decoder<T> {
    pub(crate) fn custom(
        format: &'static str,
        decode: impl Fn(&[u8]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            format: Format::Custom(format),
            decode: Arc::new(decode),
        }
    }

    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<T, String> {
        (self.decode)(bytes)
    }
}

impl<T: DeserializeOwned> Decoder<T> {
    /// A serde decoder of `format`. [`Format::Custom`] has no serde parser: every document is
    /// refused with a message saying a decoder is missing.
    pub(crate) fn serde(format: Format) -> Self {
        Self {
            format,
            decode: Arc::new(move |bytes: &[u8]| format.parse(bytes)),
        }
    }
}

impl Format {
    /// Parses `bytes` in this format with serde, as a store of this format would before
    /// validation — without a store: for reading a few settings of a document leniently (into a
    /// type that ignores the rest) before, or whether or not, the whole document passes. Nothing
    /// is validated, counted or logged. [`Format::Custom`] has no serde parser and is refused.
    ///
    /// # Errors
    /// The parser's message, which names the line or field.
    ///
    /// ```
    /// use ravelin_config::Format;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Reload {
    ///     watch_interval: String,
    /// }
    /// #[derive(serde::Deserialize)]
    /// struct Peek {
    ///     reload: Reload,
    /// }
    ///
    /// let text = b"[server]\nlisten = 'nonsense'\n[reload]\nwatch_interval = '1s'\n";
    /// let peek: Peek = Format::Toml.parse(text).unwrap();
    /// assert_eq!(peek.reload.watch_interval, "1s");
    /// assert!(Format::Json.parse::<Peek>(text).is_err());
    /// ```
    pub fn parse<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Format::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Format::Toml => match std::str::from_utf8(bytes) {
                Ok(text) => toml::from_str(text).map_err(|e| e.to_string()),
                Err(e) => Err(format!("not UTF-8: {e}")),
            },
            Format::Custom(name) => Err(format!(
                "no decoder for format {name:?}: set one with StoreBuilder::with_decoder"
            )),
        }
    }
}

impl<T> Clone for Decoder<T> {
    fn clone(&self) -> Self {
        Self {
            format: self.format,
            decode: Arc::clone(&self.decode),
        }
    }
}

impl<T> fmt::Debug for Decoder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}
