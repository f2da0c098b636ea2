//! Real peers started on loopback for the source tests: snmpsim serving recorded PDUs and a
//! pymodbus meter. Each is stopped (killed and reaped) when its handle drops. The test command
//! (`scripts/test`) installs them; a missing one fails the test with the install line. Also here:
//! how the aggregator books what a counter source reports, for the sources' property tests.

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

/// What the aggregator has booked from a source's readings `(at, value)` of one counter by each
/// reading (0 at the first), by the aggregator's own rule (`footprint_core::counter::step`), or
/// the first reading it would refuse.
pub fn book_counter(
    readings: &[(i64, u64)],
    limits: footprint_core::counter::CounterLimits,
) -> Result<Vec<u128>, String> {
    use footprint_core::counter::{CounterSample, step};
    let sample = |&(at, value): &(i64, u64)| CounterSample {
        value,
        at: footprint_core::UnixNanos(at),
    };
    let mut booked = vec![0u128];
    for pair in readings.windows(2) {
        let moved = step(sample(&pair[0]), sample(&pair[1]), limits)
            .map_err(|error| format!("{:?} after {:?} refused: {error}", pair[1], pair[0]))?;
        booked.push(booked[booked.len() - 1] + u128::from(moved.delta()));
    }
    Ok(booked)
}

/// What the aggregator books from all of `readings` (see [`book_counter`]).
pub fn booked_total(
    readings: &[(i64, u64)],
    limits: footprint_core::counter::CounterLimits,
) -> Result<u128, String> {
    Ok(book_counter(readings, limits)?.last().copied().unwrap_or(0))
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

/// A Slurm controller and node on loopback (munged, slurmctld, slurmd from Debian's slurm-wlm
/// and munge), with `deploy/slurm/`'s prolog and epilog writing to `hook_dir`, and two fake GPUs
/// (character devices) as GRES. Needs root (slurmd, mknod, munged's own user).
pub struct SlurmCluster {
    processes: Vec<Child>,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        for child in self.processes.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn is_root_user() -> bool {
    is_root()
}

fn run_checked(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl SlurmCluster {
    pub fn start(hook_dir: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Every directory on the way to munged's socket must be searchable by all.
        run_checked(Command::new("chmod").arg("755").arg(root));
        for sub in [
            "state",
            "spool",
            "log",
            "run",
            "dev",
            "munge-key",
            "munge-run",
        ] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        let key = root.join("munge-key/munge.key");
        std::fs::write(
            &key,
            (0..1024).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>(),
        )
        .unwrap();
        run_checked(
            Command::new("chown")
                .arg("-R")
                .arg("munge")
                .arg(root.join("munge-key"))
                .arg(root.join("munge-run")),
        );
        run_checked(Command::new("chmod").arg("700").arg(root.join("munge-key")));
        run_checked(Command::new("chmod").arg("400").arg(&key));
        let socket = root.join("munge-run/munge.socket");
        let munged = Command::new("setpriv")
            .args([
                "--reuid=munge",
                "--regid=munge",
                "--clear-groups",
                "/usr/sbin/munged",
                "--foreground",
            ])
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!(
                "--pid-file={}",
                root.join("munge-run/munged.pid").display()
            ))
            .arg(format!(
                "--log-file={}",
                root.join("munge-run/munged.log").display()
            ))
            .arg(format!(
                "--seed-file={}",
                root.join("munge-run/munged.seed").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("munged (apt-get install munge)");
        let mut cluster = Self {
            processes: vec![munged],
            conf: root.join("slurm.conf"),
            _dir: dir,
        };
        let root = cluster._dir.path().to_path_buf();
        wait_until(Duration::from_secs(10), "munged's socket", || {
            socket.exists()
        });

        for gpu in 0..2 {
            run_checked(
                Command::new("mknod")
                    .arg(root.join(format!("dev/nvidia{gpu}")))
                    .args(["c", "1", "3"]),
            );
        }
        std::fs::write(
            root.join("gres.conf"),
            format!("Name=gpu File={}/dev/nvidia[0-1]\n", root.display()),
        )
        .unwrap();
        let hooks = repository().join("deploy/slurm").canonicalize().unwrap();
        for (name, hook) in [
            ("prolog", "footprint-prolog.sh"),
            ("epilog", "footprint-epilog.sh"),
        ] {
            let wrapper = root.join(format!("{name}.sh"));
            std::fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\nFOOTPRINT_SLURM_DIR={} exec {}\n",
                    hook_dir.display(),
                    hooks.join(hook).display()
                ),
            )
            .unwrap();
            run_checked(Command::new("chmod").arg("755").arg(&wrapper));
        }
        let host = run_checked(Command::new("hostname").arg("-s"))
            .trim()
            .to_owned();
        let node = run_checked(Command::new("slurmd").arg("-C"))
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .filter(|field| !field.starts_with("RealMemory=") && !field.starts_with("UpTime="))
            .collect::<Vec<_>>()
            .join(" ");
        let ports = (free_port(false), free_port(false));
        let path = |sub: &str| root.join(sub).display().to_string();
        std::fs::write(
            &cluster.conf,
            format!(
                "ClusterName=footprint-test\nSlurmctldHost={host}(127.0.0.1)\nSlurmUser=root\nSlurmdUser=root\n\
SlurmctldPort={}\nSlurmdPort={}\nAuthType=auth/munge\nAuthInfo=socket={}\nCryptoType=crypto/munge\n\
StateSaveLocation={}\nSlurmdSpoolDir={}\nSlurmctldPidFile={}\nSlurmdPidFile={}\n\
SlurmctldLogFile={}\nSlurmdLogFile={}\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nJobAcctGatherType=jobacct_gather/none\n\
AccountingStorageType=accounting_storage/none\nGresTypes=gpu\nProlog={}\nEpilog={}\nPrologFlags=Alloc\n\
ReturnToService=2\nMpiDefault=none\n{node} RealMemory=500 NodeAddr=127.0.0.1 Gres=gpu:2 State=UNKNOWN\n\
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
                ports.0,
                ports.1,
                socket.display(),
                path("state"),
                path("spool"),
                path("run/slurmctld.pid"),
                path("run/slurmd.pid"),
                path("log/slurmctld.log"),
                path("log/slurmd.log"),
                path("prolog.sh"),
                path("epilog.sh"),
            ),
        )
        .unwrap();
        for (daemon, args) in [("slurmctld", &["-D", "-i"][..]), ("slurmd", &["-D"][..])] {
            let child = Command::new(daemon)
                .args(args)
                .env("SLURM_CONF", &cluster.conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("Slurm daemons (apt-get install slurm-wlm munge)");
            cluster.processes.push(child);
            std::thread::sleep(Duration::from_millis(500));
        }
        wait_until(Duration::from_secs(30), "the Slurm node to be idle", || {
            cluster
                .command("sinfo")
                .args(["-h", "-o", "%T"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
        });
        cluster
    }

    /// A Slurm client command pointed at this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    /// Submits a batch job; returns its id.
    pub fn sbatch(&self, args: &[&str]) -> String {
        let out = run_checked(self.command("sbatch").arg("--parsable").args(args));
        out.trim().split(';').next().unwrap().to_owned()
    }
}

/// OpenIPMI's simulated BMC (`ipmi_sim`, Debian's openipmi) on a loopback UDP port, answering
/// RMCP+ as user `admin` / `secret`, with our DCMI power plug-in (`collector/tests/ipmi_sim/`,
/// built here against libopenipmi-dev) reporting the watts written in `power_file`.
pub fn ipmi_sim(power_file: &Path) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("dcmi_power.so");
    let source = repository().join("collector/tests/ipmi_sim/dcmi_power.c");
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&plugin)
        .arg(&source)
        .status()
        .expect("gcc");
    assert!(
        status.success(),
        "building the DCMI plug-in needs libopenipmi-dev (apt-get install openipmi libopenipmi-dev ipmitool)"
    );
    let port = free_port(true);
    let config = dir.path().join("lan.conf");
    std::fs::write(
        &config,
        format!(
            "name \"footprint-bmc\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    \
priv_limit admin\n    allowed_auths_callback none md5 straight\n    allowed_auths_user none md5 straight\n    \
allowed_auths_operator none md5 straight\n    allowed_auths_admin none md5 straight\n    \
guid a123456789abcdefa123456789abcdef\n  endlan\n  user 2 true \"admin\" \"secret\" admin 10 none md5 straight\n  \
loadlib \"{}\" \"{}\"\n",
            plugin.display(),
            power_file.display()
        ),
    )
    .unwrap();
    let commands = dir.path().join("bmc.emu");
    std::fs::write(
        &commands,
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let child = Command::new("ipmi_sim")
        .args(["-n", "-p", "-c"])
        .arg(&config)
        .arg("-f")
        .arg(&commands)
        .arg("-s")
        .arg(dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ipmi_sim (apt-get install openipmi)");
    let peer = Peer {
        child,
        port,
        _dir: dir,
    };
    wait_until(Duration::from_secs(20), "ipmi_sim to answer", || {
        Command::new("ipmitool")
            .args([
                "-I",
                "lanplus",
                "-C",
                "3",
                "-H",
                "127.0.0.1",
                "-U",
                "admin",
                "-P",
                "secret",
                "-p",
            ])
            .arg(port.to_string())
            .args(["mc", "info"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    peer
}
