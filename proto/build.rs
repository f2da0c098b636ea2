//! Compiles `footprint/v1/*.proto` and the vendored kubelet pod-resources API with protox (pure
//! Rust), so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "footprint/v1/readings.proto",
        "footprint/v1/ingest.proto",
        "footprint/v1/query.proto",
        "kubelet/podresources/v1/api.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        // Tools print balances as JSON as they come off the wire.
        .type_attribute(".footprint.v1.Balance", "#[derive(serde::Serialize)]")
        // A batch's meter ids stay slices of the frame they arrived in (see readings.proto).
        .bytes(".footprint.v1.Reading.meter_id")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
