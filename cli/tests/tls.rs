//! Security on loopback with real TLS: the certificates and tokens come from `footprint certs` and
//! `footprint token`, the aggregator and collectors are the real processes, HTTP is asked with
//! curl and OpenSSL's `s_client`. A collector is admitted only with a certificate from the site's
//! CA, unexpired, naming the host it reports for; tokens grant only their scopes and projects;
//! every refusal is counted on `/metrics`; a certificate rotated while a collector streams is
//! served to new connections and the open stream goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{INFER, Running, TRAIN, collector_config, job_table};

fn footprint(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args(args)
        .output()
        .unwrap()
}

fn footprint_ok(args: &[&str]) -> String {
    let output = footprint(args);
    assert!(output.status.success(), "footprint {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// A site with TLS everywhere: its PKI, tokens and a running aggregator.
struct Site {
    dir: PathBuf,
    grpc: String,
    http: String,
    _aggregator: Running,
}

impl Site {
    fn start(dir: &Path) -> Self {
        let pki = dir.join("pki");
        let pki_text = pki.to_str().unwrap();
        footprint_ok(&[
            "certs",
            "init",
            "--hosts",
            "node-a,node-b",
            "--out",
            pki_text,
        ]);
        footprint_ok(&["certs", "issue", "--ca-dir", pki_text, "--name", "operator"]);
        let mut web = String::from(
            "tls_server_config:\n  cert_file: pki/aggregator.pem\n  key_file: pki/aggregator-key.pem\n\
             bearer_tokens:\n",
        );
        for (name, scopes, projects) in [
            ("ops", "read,report,control", None),
            ("reader", "read", None),
            ("vision", "read", Some("vision")),
        ] {
            let out = dir.join(format!("{name}.token"));
            let mut args = vec![
                "token",
                "new",
                "--name",
                name,
                "--scope",
                scopes,
                "--out",
                out.to_str().unwrap(),
            ];
            if let Some(projects) = projects {
                args.extend(["--project", projects]);
            }
            web.push_str(&footprint_ok(&args));
        }
        std::fs::write(dir.join("web.yml"), web).unwrap();
        let config = dir.join("aggregator.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
                 web_config_file = {:?}\n\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n\
                 client_ca_file = {:?}\nreload_interval_s = 1\n",
                dir.join("ledger"),
                dir.join("web.yml"),
                pki.join("aggregator.pem"),
                pki.join("aggregator-key.pem"),
                pki.join("ca.pem"),
            ),
        )
        .unwrap();
        let (aggregator, addresses) = common::start_aggregator(
            Path::new(env!("CARGO_BIN_EXE_footprint-aggregator")),
            &config,
            std::fs::File::create(dir.join("aggregator.log"))
                .unwrap()
                .into(),
        );
        Self {
            dir: dir.to_owned(),
            grpc: addresses["grpc"].as_str().unwrap().to_owned(),
            http: addresses["http"].as_str().unwrap().to_owned(),
            _aggregator: aggregator,
        }
    }

    fn path(&self, relative: &str) -> String {
        self.dir.join(relative).to_str().unwrap().to_owned()
    }

    /// A collector for `host` presenting `cert` (a path under the site's directory, without
    /// `.pem`), replaying `jobs` at `speed`; its stderr goes to `host.log`.
    fn collector(&self, host: &str, cert: &str, speed: f64, jobs: &str) -> Running {
        let tls = format!(
            "[tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            self.path("pki/ca.pem"),
            self.path(&format!("{cert}.pem")),
            self.path(&format!("{cert}-key.pem")),
        );
        let text = collector_config(
            host,
            &format!("https://{}", self.grpc),
            &tls,
            "",
            speed,
            &format!("gpus = 3\n{jobs}"),
        );
        let config = self
            .dir
            .join(format!("{host}-{}.toml", cert.replace('/', "-")));
        std::fs::write(&config, text).unwrap();
        Running(
            Command::new(env!("CARGO_BIN_EXE_footprint-collector"))
                .arg("--config")
                .arg(&config)
                .stderr(std::fs::File::create(self.dir.join(format!("{host}.log"))).unwrap())
                .spawn()
                .unwrap(),
        )
    }

    /// An HTTPS request with curl, trusting only the site's CA: the status and body.
    fn https(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let mut command = Command::new("curl");
        command
            .args(["--silent", "--show-error", "--max-time", "20", "--cacert"])
            .arg(self.path("pki/ca.pem"))
            .args(["-X", method, "--write-out", "\n%{http_code}"]);
        if let Some(name) = token {
            let secret = std::fs::read_to_string(self.dir.join(format!("{name}.token"))).unwrap();
            command
                .arg("-H")
                .arg(format!("Authorization: Bearer {}", secret.trim()));
        }
        let output = command
            .arg(format!("https://{}{path}", self.http))
            .output()
            .expect("curl");
        assert!(output.status.success(), "curl {path}: {output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.parse().unwrap(), body.to_owned())
    }

    /// A counter of the aggregator's `/metrics`, by its full sample name and labels.
    fn counter(&self, sample: &str) -> f64 {
        let (status, body) = self.https("GET", "/metrics", Some("ops"));
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    /// Waits until `sample` reaches `at_least`.
    fn wait_for(&self, sample: &str, at_least: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.counter(sample) < at_least {
            assert!(
                Instant::now() < deadline,
                "{sample} did not reach {at_least}; aggregator log:\n{}",
                std::fs::read_to_string(self.dir.join("aggregator.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `footprint ARGS --server https://… ` with the operator's certificate and `token`.
    fn query(&self, args: &[&str], token: Option<&str>) -> std::process::Output {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend([
            "--server".into(),
            format!("https://{}", self.grpc),
            "--ca-file".into(),
            self.path("pki/ca.pem"),
            "--cert-file".into(),
            self.path("pki/hosts/operator.pem"),
            "--key-file".into(),
            self.path("pki/hosts/operator-key.pem"),
        ]);
        if let Some(name) = token {
            all.extend(["--token-file".into(), self.path(&format!("{name}.token"))]);
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        footprint(&all)
    }
}

fn wait_for_exit(collector: &mut Running, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = collector.0.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(status.success(), "collector failed: {status}\n{text}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "collector did not finish: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn jobs_with_projects() -> (String, String) {
    (
        format!(
            "{}project = \"vision\"\n",
            job_table(&INFER, "[2]", "4", "inference")
        ),
        format!(
            "{}project = \"nlp\"\n",
            job_table(&TRAIN, "[0, 1]", "0-7", "training")
        ),
    )
}

#[test]
fn only_a_certificate_from_the_site_ca_unexpired_and_naming_the_host_may_report_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path());
    // Another CA's certificate for node-a, and one of ours that has already expired.
    footprint_ok(&[
        "certs",
        "init",
        "--hosts",
        "node-a",
        "--out",
        &site.path("other"),
    ]);
    std::fs::create_dir(site.path("expired")).unwrap();
    for file in ["ca.pem", "ca-key.pem"] {
        std::fs::copy(
            site.path(&format!("pki/{file}")),
            site.path(&format!("expired/{file}")),
        )
        .unwrap();
    }
    footprint_ok(&[
        "certs",
        "issue",
        "--ca-dir",
        &site.path("expired"),
        "--name",
        "node-a",
        "--days",
        "0",
    ]);
    std::thread::sleep(Duration::from_millis(1_100));

    let refused = [
        (
            "node-a",
            "other/hosts/node-a",
            "unknown_issuer",
            "tls_handshakes_failed",
        ),
        (
            "node-a",
            "expired/hosts/node-a",
            "expired_certificate",
            "tls_handshakes_failed",
        ),
        (
            "node-b",
            "pki/hosts/node-a",
            "host_not_in_certificate",
            "streams_refused",
        ),
    ];
    for (host, cert, reason, family) in refused {
        let collector = site.collector(host, cert, 3600.0, "");
        site.wait_for(
            &format!("footprint_aggregator_{family}_total{{reason=\"{reason}\"}}"),
            1.0,
        );
        drop(collector);
        if reason == "host_not_in_certificate" {
            let log = std::fs::read_to_string(site.dir.join("node-b.log")).unwrap();
            assert!(
                log.contains("node-b") && log.contains("certificate"),
                "the collector is not told why: {log}"
            );
        }
    }
    assert_eq!(
        site.counter("footprint_aggregator_readings_stored_total"),
        0.0,
        "a refused collector's readings were stored"
    );

    // The right certificates: both hosts stream to the end.
    let (vision, nlp) = jobs_with_projects();
    let mut a = site.collector("node-a", "pki/hosts/node-a", 3600.0, &vision);
    let mut b = site.collector("node-b", "pki/hosts/node-b", 3600.0, &nlp);
    wait_for_exit(&mut a, &site.dir.join("node-a.log"));
    wait_for_exit(&mut b, &site.dir.join("node-b.log"));
    let jobs = site.query(&["jobs", "--json"], Some("reader"));
    assert!(jobs.status.success(), "{jobs:?}");
    let jobs = String::from_utf8(jobs.stdout).unwrap();
    assert!(
        jobs.contains("infer-a") && jobs.contains("dist-train"),
        "{jobs}"
    );
}

#[test]
fn tokens_grant_only_their_scopes_and_projects_and_each_refusal_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path());
    let (vision, nlp) = jobs_with_projects();
    let mut a = site.collector("node-a", "pki/hosts/node-a", 3600.0, &vision);
    let mut b = site.collector("node-b", "pki/hosts/node-b", 3600.0, &nlp);
    wait_for_exit(&mut a, &site.dir.join("node-a.log"));
    wait_for_exit(&mut b, &site.dir.join("node-b.log"));

    // No token, an unknown one: 401 with the scheme to use.
    let (status, body) = site.https("GET", "/api/v1/jobs", None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Bearer"), "{body}");
    std::fs::write(site.dir.join("forged.token"), "fpt_0000").unwrap();
    assert_eq!(site.https("GET", "/api/v1/jobs", Some("forged")).0, 401);
    // The open paths stay open.
    assert_eq!(site.https("GET", "/healthz", None).0, 200);

    // A read token reads everything and controls nothing.
    let (status, body) = site.https("GET", "/api/v1/jobs", Some("reader"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("infer-a") && body.contains("dist-train"),
        "{body}"
    );
    let (status, body) = site.https("POST", "/api/v1/grid/events", Some("reader"));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("control"), "{body}");
    let (status, body) = site.https("GET", "/api/v1/report", Some("reader"));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("report"), "{body}");

    // A team's token sees its own jobs only.
    let (status, body) = site.https("GET", "/api/v1/jobs", Some("vision"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("infer-a") && !body.contains("dist-train"),
        "{body}"
    );
    assert_eq!(
        site.https("GET", "/api/v1/jobs/infer-a", Some("vision")).0,
        200
    );
    let (status, body) = site.https("GET", "/api/v1/jobs/dist-train", Some("vision"));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("another project"), "{body}");
    let (status, body) = site.https("GET", "/api/v1/facility", Some("vision"));
    assert_eq!(status, 403, "a team token read the whole site: {body}");

    // The same over gRPC Query, from the CLI.
    let without = site.query(&["jobs"], None);
    assert!(!without.status.success());
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("Bearer"),
        "{without:?}"
    );
    let report = site.query(
        &["report", "--out", &site.path("report.json")],
        Some("reader"),
    );
    assert!(!report.status.success());
    assert!(
        String::from_utf8_lossy(&report.stderr).contains("\"report\" scope"),
        "{report:?}"
    );

    for (reason, at_least) in [
        ("no_token", 2.0),
        ("unknown_token", 1.0),
        ("missing_scope", 3.0),
        ("other_project", 2.0),
    ] {
        let seen = site.counter(&format!(
            "footprint_aggregator_requests_refused_total{{reason=\"{reason}\"}}"
        ));
        assert!(seen >= at_least, "{reason}: {seen} < {at_least}");
    }
}

/// The serial number of the certificate `addr` serves, as OpenSSL reads it.
fn served_serial(site: &Site, addr: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -CAfile {ca} -cert {cert} -key {key} </dev/null \
             2>/dev/null | openssl x509 -noout -serial",
            ca = site.path("pki/ca.pem"),
            cert = site.path("pki/hosts/operator.pem"),
            key = site.path("pki/hosts/operator-key.pem"),
        ))
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn file_serial(path: &str) -> String {
    let output = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in", path])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_certificate_rotated_while_a_collector_streams_keeps_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path());
    let before = served_serial(&site, &site.grpc);
    assert_eq!(before, file_serial(&site.path("pki/aggregator.pem")));

    // Two simulated hours at 300×: the collector streams for about 24 s.
    let (vision, _) = jobs_with_projects();
    let mut collector = site.collector("node-a", "pki/hosts/node-a", 300.0, &vision);
    site.wait_for(
        "footprint_aggregator_batches_total{outcome=\"stored\"}",
        2.0,
    );

    // Rotate as cert-manager or certbot would: new files written in place.
    std::fs::create_dir(site.path("next")).unwrap();
    for file in ["ca.pem", "ca-key.pem"] {
        std::fs::copy(
            site.path(&format!("pki/{file}")),
            site.path(&format!("next/{file}")),
        )
        .unwrap();
    }
    footprint_ok(&[
        "certs",
        "issue",
        "--ca-dir",
        &site.path("next"),
        "--server",
        "--name",
        "localhost,127.0.0.1",
    ]);
    for file in ["aggregator.pem", "aggregator-key.pem"] {
        std::fs::copy(
            site.path(&format!("next/{file}")),
            site.path(&format!("pki/{file}")),
        )
        .unwrap();
    }
    site.wait_for(
        "footprint_aggregator_tls_reloads_total{outcome=\"reloaded\"}",
        1.0,
    );
    let after = served_serial(&site, &site.grpc);
    assert_eq!(after, file_serial(&site.path("next/aggregator.pem")));
    assert_ne!(after, before);

    wait_for_exit(&mut collector, &site.dir.join("node-a.log"));
    let log = std::fs::read_to_string(site.dir.join("node-a.log")).unwrap();
    assert!(
        !log.contains("session failed"),
        "the stream broke at the rotation:\n{log}"
    );
    let jobs = site.query(&["jobs", "--json"], Some("reader"));
    assert!(
        String::from_utf8_lossy(&jobs.stdout).contains("infer-a"),
        "{jobs:?}"
    );
}
