//! Compiles our kubelet protos with protox (a pure-Rust protobuf compiler, so no `protoc` is
//! needed on developer machines or in CI) and tonic-prost-build.

use std::error::Error;

const PROTOS: &[&str] = &[
    "proto/deviceplugin_v1beta1.proto",
    "proto/podresources_v1.proto",
    "proto/cri_runtime_v1.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    // Clients and servers of every API: odiglet serves DevicePlugin and calls Registration,
    // PodResourcesLister and the CRI; the kubelet and runtime stand-ins in the tests do the
    // reverse.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
