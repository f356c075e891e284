//! One module per `shaders/*.wgsl` op family. Each function builds a `Dispatch` (or a few) with its buffers bound and
//! its parameter block filled, ready to be pushed onto a `Plan`; nothing here runs anything by itself.
//! The CPU mirror of each family lives under the same name in `crate::reference`.

pub mod elementwise;

/// Every WGSL source of the crate, by file name: the naga validation test and the pipeline cache use this list.
pub const SHADERS: &[(&str, &str)] = &[
    ("elementwise", include_str!("../../shaders/elementwise.wgsl")),
];
