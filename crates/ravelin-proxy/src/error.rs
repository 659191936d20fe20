//! Errors an operator can act on.

/// An upstream could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The URL is not `http://host[:port][/base]` or `https://host[:port][/base]`.
    #[error("upstream {name:?}: invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The upstream's name.
        name: String,
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A timeout was set to zero, which would fail every request.
    #[error("upstream {name:?}: {field} must be greater than zero")]
    ZeroTimeout {
        /// The upstream's name.
        name: String,
        /// The timeout field.
        field: &'static str,
    },
    /// A setting is above its upper bound (a unit slip, or a value that would hold resources
    /// for hours).
    #[error("upstream {name:?}: {field} must be at most {limit}, got {value}")]
    TooLarge {
        /// The upstream's name.
        name: String,
        /// The field.
        field: &'static str,
        /// The bound, as the field's unit prints it (`3600s`, `10000`).
        limit: String,
        /// The value given.
        value: String,
    },
    /// A TLS setting is unusable: a CA or client certificate file that cannot be read or
    /// holds no usable PEM, a key that does not go with its certificate, a server name that is
    /// not one, or a TLS setting on an `http://` upstream.
    #[error("upstream {name:?}: {field}: {reason}")]
    Tls {
        /// The upstream's name.
        name: String,
        /// The setting (`ca_file`, `client_cert_file`, `client_key_file`, `tls_server_name`).
        field: &'static str,
        /// What is wrong, with the file's path where there is one.
        reason: String,
    },
    /// A health, retry or DNS setting is unusable; each violation names its field
    /// (`health.open_for`, `retry.budget_ratio`, …).
    #[error("upstream {name:?}: {violations}")]
    Policy {
        /// The upstream's name.
        name: String,
        /// What is wrong, field by field.
        violations: ravelin_primitives::Violations,
    },
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listening socket failed (address in use, permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The per-core workers could not be set up (a worker's runtime, or a shared listening
    /// socket that could not be cloned).
    #[error("cannot start the per-core workers: {source}")]
    Workers {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A limit in the server configuration is unusable.
    #[error("server config: {field} {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}
