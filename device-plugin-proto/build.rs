//! Compiles our kubelet protos with protox (a pure-Rust protobuf compiler, so no `protoc` is
//! needed on developer machines or in CI) and tonic-prost-build.

use std::error::Error;

const PROTOS: &[&str] = &[
    "proto/deviceplugin_v1beta1.proto",
    "proto/podresources_v1.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    // Clients and servers of both APIs: odiglet serves DevicePlugin and calls Registration and
    // PodResourcesLister; the kubelet stand-in in the tests does the reverse.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
