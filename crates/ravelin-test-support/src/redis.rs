//! A real `redis-server` for integration tests and benches, started on a free loopback port.
//!
//! - [`RedisServer::start`] uses `RAVELIN_REDIS_URL` when it is set (an external server, shared:
//!   tests must use unique key prefixes), otherwise spawns a local `redis-server`.
//! - [`RedisServer::spawn`] always spawns a local process, for fault tests that kill, restart or
//!   pause the server.
//! - Without a `redis-server` binary both print `skipped: redis-server not found` and return
//!   `None`, unless the environment has `CI=true`: then a skip fails the run.
//!
//! The binary is `$RAVELIN_REDIS_SERVER` when set, else `redis-server` from `PATH`. The server
//! runs with `--save '' --appendonly no` in a scratch directory, and is killed (and the directory
//! removed) on drop.

use std::io::Read as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The environment variable naming an external Redis to use instead of spawning one.
pub const URL_ENV: &str = "RAVELIN_REDIS_URL";

const BINARY_ENV: &str = "RAVELIN_REDIS_SERVER";
const READY_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_INSTANCE: AtomicU32 = AtomicU32::new(0);

/// A Redis server for one test: either a child process this helper owns, or an external URL.
#[derive(Debug)]
pub struct RedisServer {
    url: String,
    local: Option<Local>,
}

#[derive(Debug)]
struct Local {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// A server to talk to: `RAVELIN_REDIS_URL` when set, else a freshly spawned local one.
    /// `None` (after printing why) when neither is available and `CI` is not `true`.
    pub fn start() -> Option<Self> {
        if let Ok(url) = std::env::var(URL_ENV)
            && !url.is_empty()
        {
            return Some(Self { url, local: None });
        }
        Self::spawn()
    }

    /// Always spawns a local `redis-server`, so that the test may kill, restart or pause it.
    pub fn spawn() -> Option<Self> {
        let Some(binary) = find_binary() else {
            skip("redis-server not found");
            return None;
        };
        // Binding port 0 and releasing it leaves a small window in which another process may take
        // the port; retry with a new one if the server fails to come up.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "ravelin-redis-{}-{}-{}",
                std::process::id(),
                NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
                port
            ));
            std::fs::create_dir_all(&dir).expect("create redis scratch dir");
            let mut local = Local {
                binary: binary.clone(),
                port,
                dir,
                child: None,
            };
            match local.launch() {
                Ok(()) => {
                    return Some(Self {
                        url: format!("redis://127.0.0.1:{port}/"),
                        local: Some(local),
                    });
                }
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// The `redis://` URL of the server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this helper owns the process (and may kill, restart or pause it).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// The TCP port of a local server.
    pub fn port(&self) -> Option<u16> {
        self.local.as_ref().map(|l| l.port)
    }

    /// A blocking connection, for setting up and inspecting state beside the code under test.
    pub fn connection(&self) -> redis::Connection {
        let client = redis::Client::open(self.url.as_str()).expect("redis url");
        client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to redis")
    }

    /// Kills a local server with SIGKILL (no shutdown handshake, as a crash would) and waits for
    /// it to exit. Panics for an external server.
    pub fn kill(&mut self) {
        let local = self
            .local
            .as_mut()
            .expect("kill needs a spawned redis-server");
        local.kill();
    }

    /// Starts a killed local server again on the same port.
    pub fn restart(&mut self) {
        let local = self
            .local
            .as_mut()
            .expect("restart needs a spawned redis-server");
        local.kill();
        let mut last_error = String::new();
        // The old socket may linger for a moment after the kill.
        for _ in 0..50 {
            match local.launch() {
                Ok(()) => return,
                Err(e) => last_error = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "redis-server did not restart on port {}: {last_error}",
            local.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(local) = self.local.as_mut() {
            local.kill();
            let _ = std::fs::remove_dir_all(&local.dir);
        }
    }
}

// === impl Local ===

impl Local {
    fn launch(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let mut child = Command::new(&self.binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            // Fault tests stall the server with DEBUG SLEEP; Redis 7 only allows it when enabled.
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.binary.display()))?;

        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "redis-server exited with {status} on port {}: {stderr}{log}",
                    self.port
                ));
            }
            if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {} not ready after 10 s",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `redis-server` binary: `$RAVELIN_REDIS_SERVER`, else the first on `PATH` (or in `sbin`).
pub fn find_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var(BINARY_ENV) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Prints that a test was skipped, or fails it when `CI=true` (a skipped fault test in CI is a
/// silent hole in coverage).
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason}, and CI=true forbids skipping: install redis-server or set {URL_ENV}");
    }
    eprintln!("skipped: {reason}");
}

/// A key prefix unique to this process and call, so tests sharing an external Redis never collide.
pub fn unique_prefix(test: &str) -> String {
    format!(
        "ravelin-test:{}:{}:{}:",
        test,
        std::process::id(),
        NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)
    )
}
