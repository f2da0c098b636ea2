//! `footprint grid signal` and `footprint grid wait` against a real aggregator process whose
//! feed covers the real now: waiting ends at once when the grid allows, at the deadline (exit 2)
//! when it does not, and at the deadline when no aggregator answers.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HOUR_NS: i64 = 3_600_000_000_000;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An aggregator whose zone `XX` reads 420 g/kWh this hour and 150 g/kWh in three hours (a
/// forecast feed covering now), with `reduce` above 300; returns it and its HTTP URL.
fn aggregator(dir: &std::path::Path) -> (Running, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let hour = now.div_euclid(HOUR_NS) * HOUR_NS;
    let mut feed = String::from("datetime,zone,carbon_intensity_gco2_per_kwh\n");
    for h in -240..48 {
        let at =
            footprint_core::time::format_rfc3339(footprint_core::UnixNanos(hour + h * HOUR_NS));
        let g = if (0..3).contains(&h) { 420 } else { 150 };
        feed.push_str(&format!("{at},XX,{g}\n"));
    }
    std::fs::write(dir.join("feed.csv"), feed).unwrap();
    let config = dir.join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
             [carbon]\nzone = \"XX\"\nintensity_files = [{:?}]\n\
             [grid]\nreduce_above_g_per_kwh = 300.0\n",
            dir.join("ledger"),
            dir.join("feed.csv")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_footprint-aggregator"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addresses: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let url = format!("http://{}", addresses["http"].as_str().unwrap());
    (Running(child), url)
}

fn footprint(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args(args)
        .output()
        .unwrap();
    (output, started.elapsed())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn grid_wait_goes_when_the_signal_allows_and_gives_up_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (_aggregator, url) = aggregator(dir.path());

    let (output, _) = footprint(&["grid", "signal", "--url", &url]);
    assert!(output.status.success(), "{}", stderr(&output));
    let signal: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(signal["location"], "XX");
    assert_eq!(signal["intensity_now"]["g_per_kwh"], 420.0);
    assert_eq!(signal["level"], "reduce", "{signal}");
    assert_eq!(signal["cleanest_next_24h"]["g_per_kwh"], 150.0);

    // No events yet: an empty list.
    let (output, _) = footprint(&["grid", "events", "--url", &url]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap(),
        serde_json::json!([])
    );

    // Allowed now: exits 0 at once.
    let (output, took) = footprint(&["grid", "wait", "--url", &url, "--below", "500"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        stderr(&output).contains("420 g/kWh now, go below 500"),
        "{}",
        stderr(&output)
    );
    let (output, _) = footprint(&["grid", "wait", "--url", &url, "--level", "reduce"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // Not allowed before the deadline: exit 2, having asked more than once.
    for condition in [["--below", "300"], ["--level", "normal"]] {
        let mut args = vec![
            "grid",
            "wait",
            "--url",
            url.as_str(),
            "--deadline",
            "2s",
            "--every-s",
            "1",
        ];
        args.extend(condition);
        let (output, took) = footprint(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{condition:?}: {}",
            stderr(&output)
        );
        assert!(took >= Duration::from_secs(2), "{took:?}");
        assert!(
            stderr(&output).contains("the deadline passed"),
            "{}",
            stderr(&output)
        );
        assert!(
            stderr(&output).matches("grid wait:").count() >= 3,
            "{}",
            stderr(&output)
        );
    }

    // No aggregator: keeps asking, and gives up at the deadline saying why.
    let (output, _) = footprint(&[
        "grid",
        "wait",
        "--url",
        "http://127.0.0.1:9",
        "--below",
        "500",
        "--deadline",
        "1s",
        "--every-s",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no signal"), "{}", stderr(&output));

    // A usage error is not a deadline.
    let (output, _) = footprint(&[
        "grid",
        "wait",
        "--url",
        &url,
        "--below",
        "5",
        "--deadline",
        "soon",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("--deadline"),
        "{}",
        stderr(&output)
    );
}
