//! The demo's disclosure report as its users meet it: the JSON as a snapshot, `footprint report
//! verify` on every format, the HTML opened in headless Chromium (a real browser: its screenshot
//! must show the charts, and its network log must show no request leaving the file), and the
//! command's refusals.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn footprint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn run_demo(data_dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args([
            "demo",
            "--exit",
            "--hours",
            "2",
            "--seed",
            "11",
            "--speed",
            "1000000",
            "--data-dir",
        ])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The report without what differs between two runs of the same demo: the signature (a new key
/// each run) and the batch numbers each collector reached (batching follows the wall clock).
fn comparable(json: &[u8]) -> String {
    let mut value: serde_json::Value = serde_json::from_slice(json).unwrap();
    let object = value.as_object_mut().unwrap();
    object.remove("signature");
    object.remove("manifest_sha256");
    object["manifest"].as_object_mut().unwrap().remove("ledger");
    serde_json::to_string_pretty(&value).unwrap()
}

#[test]
fn the_demo_report_verifies_in_every_format_and_matches_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    let stdout = run_demo(&data_dir);
    assert!(
        stdout.contains("Disclosure report (final, signed by key "),
        "{stdout}"
    );
    let dir_text = data_dir.to_str().unwrap();
    let json_path = data_dir.join("report.json");
    let json = std::fs::read(&json_path).unwrap();
    insta::assert_snapshot!("demo_report", comparable(&json));

    let public_key = data_dir.join("report-signing.key.pub");
    for name in ["report.json", "report.html"] {
        let file = data_dir.join(name);
        let output = footprint(&[
            "report",
            "verify",
            file.to_str().unwrap(),
            "--data-dir",
            dir_text,
            "--public-key",
            public_key.to_str().unwrap(),
        ]);
        let said = text(&output);
        assert!(output.status.success(), "{said}");
        assert!(said.contains("identical, byte for byte"), "{said}");
        assert!(
            said.contains("settled hours rebuilt from the readings; every roll-up matches"),
            "{said}"
        );
    }
    let zip = dir.path().join("report.zip");
    let output = footprint(&[
        "report",
        "--data-dir",
        dir_text,
        "--from",
        "2023-11-06T00:00:00Z",
        "--to",
        "2023-11-06T02:00:00Z",
        "--out",
        zip.to_str().unwrap(),
    ]);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    // One line of the main figures, as the report states them.
    assert!(
        said.contains("EDC ") && said.contains(" kWh, PUE ") && said.contains("market-based;"),
        "{said}"
    );
    let output = footprint(&[
        "report",
        "verify",
        zip.to_str().unwrap(),
        "--data-dir",
        dir_text,
        "--figures-only",
    ]);
    assert!(output.status.success(), "{}", text(&output));

    // Another key is not the demo's key.
    let other = dir.path().join("other.key");
    assert!(
        footprint(&["keygen", "--out", other.to_str().unwrap()])
            .status
            .success()
    );
    let output = footprint(&[
        "report",
        "verify",
        json_path.to_str().unwrap(),
        "--data-dir",
        dir_text,
        "--figures-only",
        "--public-key",
        dir.path().join("other.key.pub").to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("not made by the expected key"),
        "{}",
        text(&output)
    );

    // A figure changed in the JSON is named.
    let changed = String::from_utf8(json.clone()).unwrap().replacen(
        "\"settled_hours\":2",
        "\"settled_hours\":3",
        1,
    );
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, changed).unwrap();
    let output = footprint(&[
        "report",
        "verify",
        tampered.to_str().unwrap(),
        "--data-dir",
        dir_text,
        "--figures-only",
    ]);
    assert!(!output.status.success());
    let said = text(&output);
    assert!(
        said.contains("report.period.settled_hours: the file has 3, the ledger gives 2"),
        "{said}"
    );
}

/// Opens `html` in headless Chromium (taking a screenshot to `shot` if given) and returns the
/// URLs the page itself asked for other than the file: from the browser's network log, the
/// requests whose initiator is the page (the browser's own carry "not an origin").
fn open_in_chromium(html: &Path, scratch: &Path, shot: Option<&Path>) -> Vec<String> {
    std::fs::create_dir_all(scratch).unwrap();
    let net_log = scratch.join("net.json");
    let mut command = Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,2400",
            // The browser's own traffic (updates, accounts, dictionaries) is switched off.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--disable-features=SpellCheck,Translate,OptimizationHints,MediaRouter",
            "--no-first-run",
            "--no-default-browser-check",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("profile").display()
        ))
        .arg(format!("--log-net-log={}", net_log.display()));
    match shot {
        Some(shot) => command.arg(format!("--screenshot={}", shot.display())),
        None => command.arg("--dump-dom"),
    };
    let output = command
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium runs (scripts/test installs it)");
    assert!(
        output.status.success() && shot.is_none_or(Path::exists),
        "{}",
        text(&output)
    );
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(&net_log).unwrap()).unwrap();
    let start_job = &log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"];
    assert!(
        start_job.is_number(),
        "the net log names no URL_REQUEST_START_JOB"
    );
    let mut requested: Vec<String> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| &event["type"] == start_job)
        .filter(|event| event["params"]["initiator"] != "not an origin")
        .filter_map(|event| event["params"]["url"].as_str())
        .filter(|url| !url.starts_with("file://") && !url.starts_with("data:"))
        .map(str::to_owned)
        .collect();
    requested.dedup();
    requested
}

#[test]
fn the_html_report_renders_its_charts_in_chromium_and_requests_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    run_demo(&data_dir);
    let html = data_dir.join("report.html");
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 8, "one SVG per chart");
    let shot = dir.path().join("report.png");
    let requested = open_in_chromium(&html, &dir.path().join("report"), Some(&shot));
    assert!(requested.is_empty(), "the report requested {requested:?}");
    // The check can see a request: the same page loading an image from the network is caught.
    let leaking = dir.path().join("leaking.html");
    std::fs::write(
        &leaking,
        page.replacen(
            "<body>",
            "<body><img src=\"http://127.0.0.1:9/leak.png\">",
            1,
        )
        .replacen(
            "<meta http-equiv=\"Content-Security-Policy\"",
            "<meta name=\"no-policy\"",
            1,
        ),
    )
    .unwrap();
    let caught = open_in_chromium(&leaking, &dir.path().join("leaking"), None);
    assert_eq!(caught, vec!["http://127.0.0.1:9/leak.png".to_owned()]);

    // The charts are drawn: the bars' and lines' colours fill many pixels of the screenshot.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let channels = frame.color_type.samples();
    let near = |rgb: [u8; 3]| {
        pixels[..frame.buffer_size()]
            .chunks(channels)
            .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= 6))
            .count()
    };
    let jobs_blue = near([0x2f, 0x6d, 0xb5]);
    let idle_blue = near([0x9d, 0xb9, 0xd9]);
    assert!(
        jobs_blue > 20_000,
        "the charts' blue covers only {jobs_blue} pixels"
    );
    assert!(
        idle_blue > 200,
        "the idle layer covers only {idle_blue} pixels"
    );
}

#[test]
fn report_refuses_bad_requests_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    run_demo(&data_dir);
    let dir_text = data_dir.to_str().unwrap();
    let out = dir.path().join("never.json");
    let out_text = out.to_str().unwrap();
    for (args, expected) in [
        (
            vec![
                "--from",
                "2023-11-06T02:00:00Z",
                "--to",
                "2023-11-06T01:00:00Z",
            ],
            "inverted",
        ),
        (
            vec![
                "--from",
                "2023-11-06T00:30:00Z",
                "--to",
                "2023-11-06T01:00:00Z",
            ],
            "not on the hour",
        ),
        (
            vec![
                "--from",
                "2024-01-01T00:00:00Z",
                "--to",
                "2024-01-02T00:00:00Z",
            ],
            "no settled hour",
        ),
        (vec!["--require-settled"], "require_settled"),
        (
            vec!["--key", "/nonexistent/key.pem"],
            "/nonexistent/key.pem",
        ),
    ] {
        let mut full = vec!["report", "--data-dir", dir_text, "--out", out_text];
        full.extend(args);
        let output = footprint(&full);
        assert!(!output.status.success(), "{full:?} was accepted");
        assert!(
            text(&output).contains(expected),
            "{full:?}: {}",
            text(&output)
        );
        assert!(!out.exists(), "{full:?} wrote {out_text}");
    }
    let output = footprint(&[
        "report",
        "verify",
        "/nonexistent.json",
        "--data-dir",
        dir_text,
    ]);
    assert!(!output.status.success());
}
