//! Tests against software written elsewhere: the helpers of each interop suite.

pub mod envoy;
pub mod grpc;
