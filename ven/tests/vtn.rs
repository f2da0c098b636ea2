//! The bridge against the real `openleadr-vtn` (LF Energy's OpenADR 3.1 VTN, on a real
//! PostgreSQL) and a real Footprint aggregator, all on loopback: a utility's event reaches the
//! aggregator's budget and signal; posting it again replaces it; a changed one replaces it; one the aggregator cannot act on is refused with the field named; a VTN that is down or
//! answers garbage leaves the last valid events in force and the signal says so; an event the
//! utility deletes is cancelled.
//!
//! Needs PostgreSQL's server programs (Debian `postgresql`) and the main workspace's
//! `footprint-aggregator` binary (`cargo build` at the top first, or `FOOTPRINT_AGGREGATOR`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use argon2::PasswordHasher;
use serde_json::{Value, json};

/// Kills a child process when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A PostgreSQL cluster of its own in a temporary directory, stopped when dropped.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_user: Option<&'static str>,
}

impl Postgres {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.as_user {
            // PostgreSQL refuses to run as root: run it as Debian's `postgres` user.
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    fn start(dir: &Path) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server programs (Debian package postgresql)")
            .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let as_user = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
            .then_some("postgres");
        let data = dir.join("pgdata");
        std::fs::create_dir(&data).unwrap();
        if let Some(user) = as_user {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            let status = Command::new("chown").arg(user).arg(&data).status().unwrap();
            assert!(status.success());
        }
        let port = free_port();
        let postgres = Self {
            bin,
            data,
            port,
            as_user,
        };
        let output = postgres
            .command("initdb")
            .args(["-U", "openadr", "--auth=trust", "-E", "UTF8", "-D"])
            .arg(&postgres.data)
            .output()
            .unwrap();
        assert!(output.status.success(), "initdb: {output:?}");
        let options = format!("-h 127.0.0.1 -p {port} -k {}", postgres.data.display());
        let output = postgres
            .command("pg_ctl")
            .arg("-D")
            .arg(&postgres.data)
            .args(["-o", &options, "-l"])
            .arg(postgres.data.join("log"))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(output.status.success(), "pg_ctl start: {output:?}");
        postgres.sql("CREATE DATABASE openadr_vtn", "postgres");
        postgres
    }

    fn url(&self) -> String {
        format!("postgres://openadr@127.0.0.1:{}/openadr_vtn", self.port)
    }

    fn sql(&self, sql: &str, database: &str) {
        let output = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "openadr",
            ])
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(output.status.success(), "psql {sql}: {output:?}");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn argon2(secret: &str) -> String {
    let salt = argon2::password_hash::SaltString::encode_b64(b"footprint-ven-test").unwrap();
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// A user of the VTN's own OAuth provider, with its scopes and secret.
fn add_user(postgres: &Postgres, id: &str, scopes: &[&str], secret: &str) {
    postgres.sql(
        &format!(
            "INSERT INTO \"user\" (id, reference, description, scopes, created, modified)
             VALUES ('{id}', '{id}', 'footprint-ven test', '{{{}}}', now(), now());
             INSERT INTO user_credentials (user_id, client_id, client_secret)
             VALUES ('{id}', '{id}', '{}');",
            scopes.join(","),
            argon2(secret)
        ),
        "openadr_vtn",
    );
}

/// The real VTN, in this process, on a loopback port; aborted to take it down.
async fn start_vtn(postgres: &Postgres) -> (tokio::task::JoinHandle<()>, SocketAddr) {
    // SAFETY (of the environment): set before the VTN reads it, by the one test in this file.
    unsafe {
        std::env::set_var("DATABASE_URL", postgres.url());
        std::env::set_var("OAUTH_TYPE", "INTERNAL");
        // 256 bits, base64: the HMAC key the VTN signs its tokens with.
        std::env::set_var(
            "OAUTH_BASE64_SECRET",
            "Zm9vdHByaW50LXZlbi10ZXN0LXNlY3JldC0yNTYtYml0cy1sb25nLWVub3VnaA==",
        );
        std::env::set_var("OAUTH_TOKEN_URL", "http://127.0.0.1/auth/token");
        std::env::set_var("PORT", "0");
    }
    let server = openleadr_vtn::VtnServer::new(openleadr_vtn::VtnConfig::from_env())
        .await
        .expect("the VTN starts");
    // It binds every address; serve its router on loopback only.
    drop(server.listener);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server.router;
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (task, addr)
}

/// The utility's side: its business logic posting to the VTN.
struct Utility {
    vtn: String,
    token: String,
    http: reqwest::Client,
}

impl Utility {
    async fn new(vtn: SocketAddr) -> Self {
        let http = reqwest::Client::new();
        let vtn = format!("http://{vtn}");
        let response: Value = http
            .post(format!("{vtn}/auth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&client_id=utility-bl&client_secret=bl-secret")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = response["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("token: {response}"))
            .to_owned();
        Self { vtn, token, http }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.vtn))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }
}

fn rfc3339(offset_s: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = now.div_euclid(60) * 60 + offset_s;
    let days = at.div_euclid(86_400);
    let secs = at.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn aggregator_binary() -> PathBuf {
    std::env::var_os("FOOTPRINT_AGGREGATOR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/footprint-aggregator"),
        PathBuf::from,
    )
}

fn start_aggregator(dir: &Path) -> (Running, String) {
    let config = dir.join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
             [carbon]\nzone = \"XX\"\n[grid]\nmin_facility_kw = 50.0\n",
            dir.join("ledger")
        ),
    )
    .unwrap();
    let binary = aggregator_binary();
    assert!(
        binary.exists(),
        "{} is missing: build the main workspace first (cargo build) or set FOOTPRINT_AGGREGATOR",
        binary.display()
    );
    let mut child = Command::new(binary)
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
    let addresses: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let url = format!("http://{}/", addresses["http"].as_str().unwrap());
    (Running(child), url)
}

/// One poll of the bridge as its own process: its exit status and stdout.
async fn poll_once(vtn: SocketAddr, aggregator: &str, secret: &Path) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_footprint-ven"))
        .args(["--vtn", &format!("http://{vtn}/")])
        .args(["--client-id", "site-ven", "--client-secret-file"])
        .arg(secret)
        .args(["--aggregator", aggregator, "--source", "vtn:utility"])
        .args(["--program", "site-dr", "--interval-s", "10", "--once"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), stdout)
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// A capacity limit of `kw` from 10 minutes ago for an hour.
fn capacity_event(program_id: &str, kw: f64) -> Value {
    json!({
        "programID": program_id, "eventName": "evening peak",
        "intervalPeriod": {"start": rfc3339(-600), "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [kw]}]}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vtns_events_reach_the_signal_and_a_failing_vtn_leaves_them_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let postgres = Postgres::start(dir.path());
    let (vtn_task, vtn) = start_vtn(&postgres).await;
    add_user(
        &postgres,
        "utility-bl",
        &["read_all", "write_programs", "write_events"],
        "bl-secret",
    );
    add_user(&postgres, "site-ven", &["read_targets"], "ven-secret");
    let secret = dir.path().join("ven-secret");
    std::fs::write(&secret, "ven-secret\n").unwrap();
    let (_aggregator, aggregator) = start_aggregator(dir.path());
    let http = reqwest::Client::new();
    let signal_url = format!("{aggregator}api/v1/grid/signal");
    let signal = || get(&http, signal_url.clone());

    let utility = Utility::new(vtn).await;
    let program = utility
        .send(
            reqwest::Method::POST,
            "/programs",
            Some(&json!({"programName": "site-dr"})),
        )
        .await;
    let program_id = program["id"].as_str().unwrap().to_owned();
    let event = utility
        .send(
            reqwest::Method::POST,
            "/events",
            Some(&capacity_event(&program_id, 400.0)),
        )
        .await;
    let event_id = event["id"].as_str().unwrap().to_owned();

    // The event reaches the aggregator: its budget, its source, the source's health.
    let (ok, out) = poll_once(vtn, &aggregator, &secret).await;
    assert!(ok, "{out}");
    assert!(
        out.starts_with("listed 1 · posted 1 · cancelled 0 · refused 0"),
        "{out}"
    );
    let now = signal().await;
    assert_eq!(now["facility_power_budget_kw"], 400.0, "{now}");
    assert_eq!(now["active_events"][0]["id"], event_id.as_str());
    assert_eq!(now["active_events"][0]["source"], "vtn:utility");
    assert_eq!(now["event_sources"][0]["name"], "vtn:utility");
    assert_eq!(now["event_sources"][0]["state"], "ok");
    assert_eq!(now["event_sources"][0]["events"], 1);

    // Polled again by a new bridge process: posted again, replacing it, still one event.
    let (ok, out) = poll_once(vtn, &aggregator, &secret).await;
    assert!(ok && out.contains("listed 1 ·"), "{out}");
    let events = get(&http, format!("{aggregator}api/v1/grid/events")).await;
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");

    // The utility lowers the limit: the new one is in force.
    utility
        .send(
            reqwest::Method::PUT,
            &format!("/events/{event_id}"),
            Some(&capacity_event(&program_id, 300.0)),
        )
        .await;
    let (ok, out) = poll_once(vtn, &aggregator, &secret).await;
    assert!(ok && out.contains("posted 1"), "{out}");
    assert_eq!(signal().await["facility_power_budget_kw"], 300.0);

    // An event the aggregator cannot place in time (no intervalPeriod anywhere): refused, with
    // the field named, in the poll's output and the source's health; the rest stands.
    utility
        .send(
            reqwest::Method::POST,
            "/events",
            Some(&json!({
                "programID": program_id, "eventName": "no period",
                "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]}]
            })),
        )
        .await;
    let (ok, out) = poll_once(vtn, &aggregator, &secret).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("listed 2") && out.contains("refused 1"),
        "{out}"
    );
    assert!(out.contains("intervals[0].intervalPeriod"), "{out}");
    let now = signal().await;
    assert_eq!(now["facility_power_budget_kw"], 300.0);
    assert_eq!(now["level"], "reduce", "{now}");
    let refused = &now["event_sources"][0]["refused"][0];
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("intervals[0].intervalPeriod"),
        "{now}"
    );

    // The VTN goes down: the poll fails, the last valid event stays in force, and the signal
    // says the source is failing.
    vtn_task.abort();
    let _ = vtn_task.await;
    let (ok, out) = poll_once(vtn, &aggregator, &secret).await;
    assert!(!ok, "{out}");
    assert!(out.contains("failed: VTN http://127.0.0.1"), "{out}");
    let now = signal().await;
    assert_eq!(now["facility_power_budget_kw"], 300.0, "{now}");
    assert_eq!(now["event_sources"][0]["state"], "failing", "{now}");
    let reason = now["reason"].as_str().unwrap();
    assert!(
        reason.contains("event source \"vtn:utility\" is failing"),
        "{reason}"
    );
    assert!(reason.contains("stay in force until they end"), "{reason}");

    // A "VTN" that answers garbage: the same.
    let garbage = garbage_vtn().await;
    let (ok, out) = poll_once(garbage, &aggregator, &secret).await;
    assert!(!ok, "{out}");
    let now = signal().await;
    assert_eq!(now["facility_power_budget_kw"], 300.0, "{now}");
    assert_eq!(now["event_sources"][0]["state"], "failing", "{now}");

    // The VTN is back (same database): the utility deletes the event, the bridge cancels it.
    let (_vtn_task, vtn) = start_vtn(&postgres).await;
    let utility = Utility::new(vtn).await;
    utility
        .send(
            reqwest::Method::DELETE,
            &format!("/events/{event_id}"),
            None,
        )
        .await;
    let (ok, out) = poll_once(vtn, &aggregator, &secret).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("listed 1") && out.contains("cancelled 1"),
        "{out}"
    );
    let now = signal().await;
    assert!(now["facility_power_budget_kw"].is_null(), "{now}");
    assert_eq!(now["event_sources"][0]["state"], "ok", "{now}");
    let events = get(&http, format!("{aggregator}api/v1/grid/events")).await;
    let cancelled = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == event_id.as_str())
        .unwrap();
    assert!(cancelled["cancelled"].is_string(), "{events}");
}

/// A server that hands out a token and answers every list with something that is not OpenADR.
async fn garbage_vtn() -> SocketAddr {
    use axum::routing::{get, post};
    let router = axum::Router::new()
        .route(
            "/auth/token",
            post(|| async {
                axum::Json(json!({"access_token": "x", "token_type": "Bearer", "expires_in": 3600}))
            }),
        )
        .fallback(get(|| async { "<html>maintenance</html>" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}
