//! The Kustomize base in `deploy/kubernetes/base` as a cluster would take it: every resource
//! valid against the Kubernetes API schemas (`kubernetes-validate --strict`, PyPI), the
//! kustomization listing every manifest, the ServiceMonitor and NetworkPolicy selecting the pods
//! and ports that exist, and the configs in its ConfigMaps loading as Footprint configs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn base() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/base")
}

/// The YAML documents of `file`, read by PyYAML (as kubectl's own YAML reader would take them).
fn documents(file: &str) -> Vec<serde_json::Value> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(base().join(file))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_kustomize_base_validates_and_its_parts_fit_together() {
    let kustomization = &documents("kustomization.yaml")[0];
    let resources: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let mut manifests: Vec<String> = std::fs::read_dir(base())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    manifests.sort();
    let mut listed: Vec<String> = resources.iter().map(|r| (*r).to_owned()).collect();
    listed.sort();
    assert_eq!(listed, manifests, "the kustomization lists every manifest");

    let output = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.33.0"])
        .args(resources.iter().map(|r| base().join(r)))
        .output()
        .expect("kubernetes-validate (PyPI)");
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    // Every built-in kind passed; only the Prometheus Operator's CRD has no schema there.
    assert_eq!(said.matches(" passed for resource ").count(), 5, "{said}");

    // The ServiceMonitor and the NetworkPolicy select what the Service and the pods carry.
    let aggregator = documents("aggregator.yaml");
    let service = aggregator.iter().find(|d| d["kind"] == "Service").unwrap();
    let monitor = &documents("service-monitor.yaml")[0];
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][key], value);
    }
    let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    let ports = service["spec"]["ports"].as_array().unwrap();
    assert!(ports.iter().any(|p| p["name"] == port), "{port}");
    let policy = &documents("network-policy.yaml")[0];
    let statefulset = aggregator
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .unwrap();
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        statefulset["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
    );
    let collector_labels =
        &documents("collector.yaml")[0]["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        collector_labels["app.kubernetes.io/name"]
    );
    for port in [7411, 7412] {
        assert!(ports.iter().any(|p| p["port"] == port), "{port}");
    }

    // The configs load: the aggregator's as it is, the collector's once the node is named.
    let dir = tempfile::tempdir().unwrap();
    let collector = dir.path().join("collector.toml");
    std::fs::write(
        &collector,
        std::fs::read_to_string(base().join("collector.toml"))
            .unwrap()
            .replace("__NODE_NAME__", "gpu-node-7"),
    )
    .unwrap();
    for (flag, file) in [
        ("--aggregator", base().join("aggregator.toml")),
        ("--collector", collector),
    ] {
        let checked = Command::new(env!("CARGO_BIN_EXE_footprint"))
            .arg("check-config")
            .arg(flag)
            .arg(&file)
            .output()
            .unwrap();
        assert!(checked.status.success(), "{checked:?}");
    }
}
