//! Real peers started on loopback for the source tests: snmpsim serving recorded PDUs and a
//! pymodbus meter. Each is stopped (killed and reaped) when its handle drops. The test command
//! (`scripts/test`) installs them; a missing one fails the test with the install line.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A peer process, killed when dropped.
pub struct Peer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace root (every crate that includes this module sits one level below it).
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the stand-in `libnvidia-ml.so.1` (`collector/tests/fake_nvml/`) into `dir` with gcc.
/// Its GPUs are read from `nvml-state` beside it, at every call.
pub fn build_fake_nvml(dir: &Path) -> PathBuf {
    let source = repository().join("collector/tests/fake_nvml/libnvidia-ml.c");
    std::fs::create_dir_all(dir).unwrap();
    let library = dir.join("libnvidia-ml.so.1");
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&library)
        .arg(&source)
        .status()
        .expect("gcc builds the stand-in NVML (apt-get install gcc)");
    assert!(status.success(), "gcc failed on {}", source.display());
    library
}

/// A free loopback port for UDP (snmpsim) or TCP (Modbus).
pub fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Where snmpsim-data keeps its recordings.
pub fn snmpsim_recordings() -> PathBuf {
    let output = Command::new("python3")
        .args([
            "-c",
            "import os, snmpsim_data; print(os.path.join(os.path.dirname(snmpsim_data.__file__), 'data'))",
        ])
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "snmpsim-data is missing: pip install snmpsim==1.2.2 snmpsim-data==1.0.1 ({})",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Starts snmpsim on a free loopback port serving `recordings`: (community, text of the
/// `.snmprec`). Returns once the agent answers.
pub fn snmpsim(recordings: &[(&str, String)]) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for (community, text) in recordings {
        std::fs::write(data.join(format!("{community}.snmprec")), text).unwrap();
    }
    let port = free_port(true);
    // Through python3 rather than the `snmpsim-command-responder` script, which a fresh pip
    // install may leave off PATH (pyenv shims, ~/.local/bin).
    let mut command = Command::new("python3");
    command
        .args([
            "-c",
            "import sys; from snmpsim.commands.responder import main; sys.exit(main())",
        ])
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!(
            "--cache-dir={}",
            dir.path().join("cache").display()
        ))
        .arg(format!("--agent-udpv4-endpoint=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if is_root() {
        command.args(["--process-user=root", "--process-group=root"]);
    }
    let child = command
        .spawn()
        .expect("python3 runs snmpsim (pip install snmpsim==1.2.2 snmpsim-data==1.0.1)");
    let peer = Peer {
        child,
        port,
        _dir: dir,
    };
    wait_until(Duration::from_secs(30), "snmpsim to answer", || {
        snmp_answers(port, recordings[0].0)
    });
    peer
}

/// Whether the agent answers a GET of sysUpTime.0 for `community`.
fn snmp_answers(port: u16, community: &str) -> bool {
    let Ok(mut session) = snmp2::SyncSession::new_v2c(
        ("127.0.0.1", port),
        community.as_bytes(),
        Some(Duration::from_millis(300)),
        0,
    ) else {
        return false;
    };
    let Ok(sys_up_time) = snmp2::Oid::from(&[1, 3, 6, 1, 2, 1, 1, 3, 0]) else {
        return false;
    };
    session.get(&sys_up_time).is_ok()
}

/// Starts the repository's pymodbus meter (`tests/peers/modbus_meter.py`) with `args`.
pub fn modbus_meter(args: &[&str]) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(false);
    let script = repository().join("collector/tests/peers/modbus_meter.py");
    let child = Command::new("python3")
        .arg(&script)
        .arg("--port")
        .arg(port.to_string())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let peer = Peer {
        child,
        port,
        _dir: dir,
    };
    wait_until(
        Duration::from_secs(30),
        "the Modbus meter to listen",
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    peer
}

fn wait_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
