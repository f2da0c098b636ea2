//! `footprint certs`: a small CA and the certificates a first deployment needs, so that mutual
//! TLS is on from the first day. A site with its own CA issues the same shapes of certificate
//! instead (docs/SECURITY.md).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Writes a new CA, the aggregator's server certificate and one client certificate per host
    /// into DIR (which must not hold them already): DIR/ca.pem, DIR/ca-key.pem,
    /// DIR/aggregator.pem, DIR/aggregator-key.pem, DIR/hosts/HOST.pem, DIR/hosts/HOST-key.pem.
    Init {
        /// The hosts whose collectors will report, comma-separated: each certificate names its
        /// host, and its collector may only report for that host.
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        /// The names and addresses collectors and clients dial the aggregator by,
        /// comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        aggregator_names: Vec<String>,
        /// The directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// How long the aggregator's and hosts' certificates are valid, days (the CA: ten
        /// years).
        #[arg(long, default_value_t = 397)]
        days: u32,
    },
    /// Issues one more certificate from a CA that `certs init` wrote: a client certificate for a
    /// host (a new collector, or an operator's `footprint` commands), or with `--server` a new
    /// aggregator certificate.
    Issue {
        /// The directory holding ca.pem and ca-key.pem; the new files go under it too.
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The name the certificate is for: a host, or with `--server` the aggregator's names,
        /// comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        name: Vec<String>,
        /// A server certificate for the aggregator (DIR/aggregator.pem) instead of a client's.
        #[arg(long)]
        server: bool,
        /// Validity, days.
        #[arg(long, default_value_t = 397)]
        days: u32,
    },
}

const CA_DAYS: u32 = 3_650;

pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init {
            hosts,
            aggregator_names,
            out,
            days,
        } => init(&hosts, &aggregator_names, &out, days),
        CertsCommand::Issue {
            ca_dir,
            name,
            server,
            days,
        } => {
            let ca = read_ca(&ca_dir)?;
            if server {
                issue(&ca, Role::Server, &name, days, &ca_dir, "aggregator")
            } else {
                issue_hosts(&ca, &name, days, &ca_dir)
            }
        }
    }
}

fn init(
    hosts: &[String],
    aggregator_names: &[String],
    out: &Path,
    days: u32,
) -> anyhow::Result<()> {
    for host in hosts {
        check_host_name(host)?;
    }
    if out.join("ca.pem").exists() || out.join("ca-key.pem").exists() {
        bail!(
            "{} already holds a CA; `footprint certs issue --ca-dir {}` adds certificates to it",
            out.display(),
            out.display()
        );
    }
    fs::create_dir_all(out.join("hosts")).with_context(|| format!("creating {}", out.display()))?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    // Each CA its own name, so that a verifier looking for a certificate's issuer by name finds
    // no other site's CA.
    let key_id: String = params.key_identifier(&key)[..6]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Footprint site CA {key_id}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.not_before, params.not_after) = validity(CA_DAYS);
    let certificate = params.self_signed(&key)?;
    write_new(&out.join("ca.pem"), certificate.pem().as_bytes(), false)?;
    write_new(
        &out.join("ca-key.pem"),
        key.serialize_pem().as_bytes(),
        true,
    )?;
    let ca = Issuer::new(params, key);

    issue(&ca, Role::Server, aggregator_names, days, out, "aggregator")?;
    issue_hosts(&ca, hosts, days, out)?;
    println!(
        "The aggregator's config:\n\n  [tls]\n  cert_file = \"{dir}/aggregator.pem\"\n  key_file = \
         \"{dir}/aggregator-key.pem\"\n  client_ca_file = \"{dir}/ca.pem\"\n\nEach collector's \
         config (HOST's files copied to that host only):\n\n  aggregator = \"https://{name}:7411\"\n  \
         [tls]\n  ca_file = \"{dir}/ca.pem\"\n  cert_file = \"{dir}/hosts/HOST.pem\"\n  key_file = \
         \"{dir}/hosts/HOST-key.pem\"\n\nKeep ca-key.pem off the hosts: it can make a certificate \
         for any host.",
        dir = out.display(),
        name = aggregator_names.first().map_or("localhost", String::as_str),
    );
    Ok(())
}

/// One client certificate per host, `DIR/hosts/HOST.pem` and its key; each host name is checked
/// first, since it becomes a file name.
fn issue_hosts(
    ca: &Issuer<'_, KeyPair>,
    hosts: &[String],
    days: u32,
    dir: &Path,
) -> anyhow::Result<()> {
    for host in hosts {
        check_host_name(host)?;
    }
    for host in hosts {
        issue(
            ca,
            Role::Client,
            std::slice::from_ref(host),
            days,
            &dir.join("hosts"),
            host,
        )?;
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Server,
    Client,
}

/// Writes `DIR/STEM.pem` and `DIR/STEM-key.pem`: a new key and its certificate for `names`.
fn issue(
    ca: &Issuer<'_, KeyPair>,
    role: Role,
    names: &[String],
    days: u32,
    dir: &Path,
    stem: &str,
) -> anyhow::Result<()> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())
        .with_context(|| format!("{names:?} is not a DNS name or IP address"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, names.join(","));
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match role {
        Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    (params.not_before, params.not_after) = validity(days);
    let certificate = params.signed_by(&key, ca)?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cert_file = dir.join(format!("{stem}.pem"));
    write_new(&cert_file, certificate.pem().as_bytes(), false)?;
    write_new(
        &dir.join(format!("{stem}-key.pem")),
        key.serialize_pem().as_bytes(),
        true,
    )?;
    println!("wrote {} for {}", cert_file.display(), names.join(", "));
    Ok(())
}

fn read_ca(dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let key = KeyPair::from_pem(&read("ca-key.pem")?).context("ca-key.pem")?;
    Issuer::from_ca_cert_pem(&read("ca.pem")?, key).context("ca.pem")
}

/// A host name becomes a file name and a certificate's DNS name: letters, digits, `-`, `.`.
fn check_host_name(host: &str) -> anyhow::Result<()> {
    let fine = !host.is_empty()
        && !host.starts_with(['.', '-'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !fine {
        bail!("--hosts: {host:?} is not a host name (letters, digits, '-' and '.')");
    }
    Ok(())
}

/// From an hour ago (clocks differ a little) to `days` from now.
fn validity(days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - Duration::hours(1),
        now + Duration::days(i64::from(days)),
    )
}

/// Creates `path`, refusing to replace a file; keys are readable by their owner only.
fn write_new(path: &Path, contents: &[u8], secret: bool) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| {
        format!(
            "creating {} (an existing file is never replaced)",
            path.display()
        )
    })?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_that_would_escape_the_directory_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden", "-x", "a b"] {
            assert!(check_host_name(bad).is_err(), "{bad:?}");
        }
        for good in ["gpu-node-01", "n1.cluster.example", "10.0.0.5"] {
            check_host_name(good).unwrap();
        }
    }

    #[test]
    fn init_writes_a_chain_that_rustls_accepts_for_each_host() {
        let dir = tempfile::tempdir().unwrap();
        init(
            &["node-a".to_owned(), "node-b".to_owned()],
            &["localhost".to_owned()],
            dir.path(),
            30,
        )
        .unwrap();
        let server = footprint_proto::tls::ServerFiles {
            cert_file: dir.path().join("aggregator.pem"),
            key_file: dir.path().join("aggregator-key.pem"),
            client_ca_file: Some(dir.path().join("ca.pem")),
            client_cert_optional: false,
            alpn: vec![b"h2".to_vec()],
        };
        server.load().unwrap();
        for host in ["node-a", "node-b"] {
            let client = footprint_proto::tls::ClientFiles {
                ca_file: dir.path().join("ca.pem"),
                cert_file: Some(dir.path().join(format!("hosts/{host}.pem"))),
                key_file: Some(dir.path().join(format!("hosts/{host}-key.pem"))),
                server_name: None,
            };
            client.load(b"h2").unwrap();
        }
        let again = init(&["node-c".to_owned()], &[], dir.path(), 30).unwrap_err();
        assert!(again.to_string().contains("already holds a CA"), "{again}");

        run(CertsCommand::Issue {
            ca_dir: dir.path().to_owned(),
            name: vec!["node-c".to_owned()],
            server: false,
            days: 30,
        })
        .unwrap();
        assert!(dir.path().join("hosts/node-c-key.pem").exists());
        let escape = run(CertsCommand::Issue {
            ca_dir: dir.path().to_owned(),
            name: vec!["../escaped".to_owned()],
            server: false,
            days: 30,
        })
        .unwrap_err();
        assert!(escape.to_string().contains("not a host name"), "{escape}");
        assert!(!dir.path().join("escaped.pem").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("ca-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "ca-key.pem is readable by others");
        }
    }
}
