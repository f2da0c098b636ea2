//! The systemd units in `deploy/systemd/` as systemd reads them: `systemd-analyze verify` (Debian
//! `systemd`) with each unit pointed at the binaries this build made, with nothing to say — no
//! unknown key, no bad value, no missing executable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// What `systemd-analyze verify` says of `unit` (empty: nothing), and whether it succeeded.
fn verify(unit: &Path) -> (bool, String) {
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said.trim().to_owned())
}

#[test]
fn every_systemd_unit_verifies_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    // footprint-ven is built in its own workspace (ven/); any executable stands in for it here.
    let binaries = [
        (
            "footprint-aggregator",
            env!("CARGO_BIN_EXE_footprint-aggregator"),
        ),
        (
            "footprint-collector",
            env!("CARGO_BIN_EXE_footprint-collector"),
        ),
        ("footprint-ven", env!("CARGO_BIN_EXE_footprint")),
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "service") {
            continue;
        }
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (name, binary) in binaries {
            text = text.replace(&format!("/usr/local/bin/{name} "), &format!("{binary} "));
        }
        let copy = dir.path().join(path.file_name().unwrap());
        std::fs::write(&copy, &text).unwrap();
        let (ok, said) = verify(&copy);
        assert!(ok && said.is_empty(), "{}: {said}", path.display());
        checked += 1;

        // The check can fail: a misspelt key is reported.
        let typo = dir.path().join(format!(
            "typo-{}",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&typo, text.replace("NoNewPrivileges=", "NoNewPrivilege=")).unwrap();
        let (_, said) = verify(&typo);
        assert!(said.contains("Unknown key"), "{}: {said}", path.display());
    }
    assert_eq!(checked, 3);
}
