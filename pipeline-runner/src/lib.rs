//! The RTDP data plane. The binary (`pipeline-runner`) runs a Pipeline's roles; this library
//! holds the pure record logic so tests and the fuzz target reach it directly.

pub mod record;
pub mod transform;
