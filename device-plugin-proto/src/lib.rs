//! Kubelet device-plugin `v1beta1` and pod-resources `v1` gRPC bindings.
//!
//! Filled in by the device-plugin work: our own protos, compiled with tonic-prost-build.
