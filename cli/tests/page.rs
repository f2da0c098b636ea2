//! The operators' page in a real browser (headless Chromium, Debian `chromium`): served by the
//! demo's aggregator while the demo keeps serving after its simulated time; the plots have data,
//! the job table lists every job of the demo, a job's page opens, an unknown job says 404; and
//! the page names no other host to load from. Screenshots are kept in
//! `target/tmp/page-*.png`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Chromium's DOM of `url` after its scripts ran; with `shot`, a screenshot instead.
fn chromium(url: &str, scratch: &Path, shot: Option<&Path>) -> String {
    let mut command = Command::new("chromium");
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1280,1800",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--no-first-run",
        "--no-default-browser-check",
        // Let the page's fetches and rendering finish before the DOM is read.
        "--virtual-time-budget=10000",
    ]);
    command.arg(format!("--user-data-dir={}", scratch.display()));
    match shot {
        Some(shot) => command.arg(format!("--screenshot={}", shot.display())),
        None => command.arg("--dump-dom"),
    };
    let output = command
        .arg(url)
        .output()
        .expect("chromium runs (scripts/test installs it)");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[test]
fn the_page_shows_the_demo_site_its_jobs_and_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args(["demo", "--hours", "26", "--speed", "1000000"])
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let demo = Running(demo);
    // The page's address is printed as the demo starts; the demo keeps serving when it is done.
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("Live page: ") {
            url = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.contains("Ctrl-C ends the demo") {
            break;
        }
    }
    let url = url.expect("the demo prints the page's address");
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();

    let (status, jobs) = get(&addr, "/api/v1/jobs");
    assert_eq!(status, 200);
    let jobs: serde_json::Value = serde_json::from_str(&jobs).unwrap();
    let ids: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert!(ids.len() > 10, "{ids:?}");

    let (status, html) = get(&addr, "/");
    assert_eq!(status, 200);
    assert!(
        !html.contains("http:") && !html.contains("https:") && !html.contains("src=\"//"),
        "the page loads only from the aggregator"
    );

    let scratch = dir.path().join("chromium");
    let page = chromium(&url, &scratch, None);
    // What the script drew (the script's own text, which holds the same words, left out).
    let drawn = |page: &str| -> String {
        let from = page.find("<main id=\"view\">").expect("the page's view");
        let to = page[from..]
            .find("<script>")
            .map_or(page.len(), |at| from + at);
        page[from..to].to_owned()
    };
    let dom = drawn(&page);
    // Three plots, each with data drawn.
    assert_eq!(dom.matches("<svg").count(), 3, "{dom}");
    assert!(dom.matches("class=\"datum\"").count() > 24, "{dom}");
    assert!(
        dom.contains("Facility power") && dom.contains(" kW<"),
        "{dom}"
    );
    // Every job in the table, each a link to its page.
    for id in &ids {
        assert!(
            dom.contains(&format!("data-job=\"{id}\"")),
            "{id} missing from the table"
        );
    }
    let job = ids[0];
    let dom = drawn(&chromium(&format!("{url}#/job/{job}"), &scratch, None));
    assert!(dom.contains(&format!("Job {job}")), "{dom}");
    assert!(dom.contains("By component") && dom.contains("Energy by hour"));
    assert!(dom.contains("measured"), "{dom}");
    let dom = drawn(&chromium(
        &format!("{url}#/job/no-such-job"),
        &scratch,
        None,
    ));
    assert!(dom.contains("404"), "{dom}");
    // …and the aggregator counted the refusal.
    let (_, metrics) = get(&addr, "/metrics");
    let not_found: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("footprint_aggregator_http_responses_total{code=\"404\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(not_found >= 1.0, "{metrics}");

    let artefacts = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for (name, page) in [("site", url.clone()), ("job", format!("{url}#/job/{job}"))] {
        let shot = artefacts.join(format!("page-{name}.png"));
        let _ = std::fs::remove_file(&shot);
        chromium(&page, &scratch, Some(&shot));
        assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    }

    // Ctrl-C ends the demo cleanly.
    let mut demo = demo;
    let status = Command::new("kill")
        .args(["-INT", &demo.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(demo.0.wait().unwrap().success());
}
