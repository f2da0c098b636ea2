//! The collector's own `/metrics` (`metrics_listen`): served while it runs, passing `promtool
//! check metrics` (Debian `prometheus`), and telling the truth: readings sampled, reconnects
//! while no aggregator answers, batches waiting in the spool.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use footprint_collector::config::CollectorConfig;
use footprint_collector::daemon::{CollectorStats, run};
use footprint_core::config::ConfigFile;
use tokio_util::sync::CancellationToken;

fn scrape(addr: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_serves_its_health_and_promtool_accepts_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = CollectorConfig::from_toml(&format!(
        "host = \"node-m\"\naggregator = \"http://{nowhere}\"\nsample_interval_ms = 100\n\
         samples_per_batch = 1\nflush_timeout_s = 1\nspool_dir = {:?}\n\
         metrics_listen = \"127.0.0.1:{port}\"\n[[sources]]\ntype = \"synthetic\"\nmeters = 4\n",
        dir.path().join("spool")
    ))
    .unwrap();
    let stop = CancellationToken::new();
    let stats = Arc::new(CollectorStats::default());
    let collector = tokio::spawn(run(config, stop.clone(), Arc::clone(&stats)));
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let text = loop {
        if let Some(text) = scrape(&addr)
            && value(&text, "footprint_collector_reconnects_total") >= 1.0
            && value(&text, "footprint_collector_spool_batches") >= 3.0
        {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no health served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        value(&text, "footprint_collector_readings_sampled_total") >= 12.0,
        "{text}"
    );
    assert_eq!(value(&text, "footprint_collector_batches_acked_total"), 0.0);
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // Stopped: the endpoint goes with the collector (the spool keeps the batches).
    stop.cancel();
    let _ = collector.await;
    let stopped = Instant::now();
    while scrape(&addr).is_some() {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "/metrics outlived the collector"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
