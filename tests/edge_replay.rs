//! The 18 November 2025 replay against the assembled proxy.
//!
//! Under steady concurrent load, the bot feature file is rewritten every 200 ms for 10 s,
//! alternating a valid model and the same model with its feature rows duplicated past the limit
//! (the file that took the internet down). Expected: zero 5xx, every request scored by the last
//! good model, rejections counted in `/metrics` and shown in `/status`, and a bounded number of
//! log lines.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ravelin_test_support::edge as support;
use ravelin_test_support::edge::{
    GENEROUS_RATELIMIT, Harness, config, doubled, feature_file, metric,
};

/// Counts the lines the process logs (every level the subscriber lets through).
#[derive(Clone, Default)]
struct LineCounter(Arc<AtomicU64>);

impl Write for LineCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let lines = buf.iter().filter(|b| **b == b'\n').count() as u64;
        self.0.fetch_add(lines, Ordering::Relaxed);
        // Keep the lines visible when the test fails.
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const REWRITES: u32 = 50; // every 200 ms for 10 s
const PERIOD: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn november_18_replay() {
    let lines = LineCounter::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let good = feature_file(7, 150, 3.0);
    let bad = doubled(&good);
    let text = config(&format!(
        "{GENEROUS_RATELIMIT}\n[botscore]\nfeature_file = \"{{dir}}/bot.json\"\nwatch_interval = \"50ms\"\n"
    ));
    let harness =
        Arc::new(Harness::start_with_files(&text, &[("bot.json", good.as_bytes())], None).await);
    let first = harness.get("/echo").await;
    assert_eq!(first.status, 200);
    let expected = first.echoed("x-bot-score");
    assert_eq!(expected.len(), 1);
    let expected = expected[0].clone();
    let status = harness.status().await;
    assert_eq!(status["feature_files"][0]["version"], 7, "{status:#}");
    let lines_before = lines.0.load(Ordering::Relaxed);

    let load = {
        let expected = expected.clone();
        support::BackgroundLoad::start(&harness, 8, Duration::from_secs(30), move |reply| {
            if reply.status != 200 {
                return Err(format!("status {}: {}", reply.status, reply.text()));
            }
            let scores = reply.echoed("x-bot-score");
            if scores != [expected.clone()] {
                return Err(format!("scored {scores:?}, not by model 7 ({expected})"));
            }
            Ok(())
        })
    };

    let path = harness.path("bot.json");
    for i in 0..REWRITES {
        let bytes = if i % 2 == 0 { &bad } else { &good };
        support::write_atomically(&path, bytes.as_bytes());
        tokio::time::sleep(PERIOD).await;
    }
    let report = load.finish().await;
    let logged = lines.0.load(Ordering::Relaxed) - lines_before;

    assert!(report.first_errors.is_empty(), "{:?}", report.first_errors);
    assert_eq!(report.count_5xx(), 0, "{report:?}");
    assert_eq!(report.non_2xx(), 0, "{report:?}");
    assert!(report.total() >= 100, "steady load ran: {report:?}");

    let status = harness.status().await;
    let files = &status["feature_files"][0];
    assert_eq!(files["version"], 7, "{files:#}");
    assert!(
        files["total_rejections"].as_u64().unwrap() >= 10,
        "{files:#}"
    );
    assert_eq!(files["last_rejection"]["kind"], "invalid", "{files:#}");
    let reason = files["last_rejection"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("300") && reason.contains("256"),
        "the reason names the count and the limit: {reason}"
    );
    let metrics = harness.metrics().await;
    let rejected = metric(
        &metrics,
        "ravelin_config_rejections_total",
        &["bot-features", "reason=\"invalid\""],
    );
    assert!(
        rejected >= 10.0,
        "rejections counted in /metrics ({rejected}):\n{metrics}"
    );
    // One line per distinct bad document plus a few lifecycle lines, not one per attempt or
    // per request.
    assert!(logged <= 25, "{logged} log lines during the replay");
    println!(
        "replay: {} requests, {} rejections, {logged} log lines",
        report.total(),
        files["total_rejections"]
    );

    Arc::try_unwrap(harness).ok().unwrap().stop().await;
}
