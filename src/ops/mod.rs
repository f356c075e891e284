//! One module per `shaders/*.wgsl` op family. Each function builds a `Dispatch` (or a few) with its buffers bound and
//! its parameter block filled, ready to be pushed onto a `Plan`; nothing here runs anything by itself.
//! The CPU mirror of each family lives under the same name in `crate::reference`.

pub mod adamw;
pub mod attention;
pub mod elementwise;
pub mod encoder;
pub mod layernorm;
pub mod logprobs;
pub mod matmul;
pub mod ppo;
pub mod preference;
pub mod sampling;
pub mod toy_mlp;

/// Every WGSL source of the crate, by file name: the naga validation test and the pipeline cache use this list.
pub const SHADERS: &[(&str, &str)] = &[
    ("elementwise", include_str!("../../shaders/elementwise.wgsl")),
    ("layernorm", include_str!("../../shaders/layernorm.wgsl")),
    ("encoder", include_str!("../../shaders/encoder.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    // matmul_subgroup.wgsl extends matmul.wgsl (it uses its bindings and helpers), and needs subgroup operations.
    ("matmul_subgroup", matmul::SRC_SUBGROUP),
    ("logprobs", include_str!("../../shaders/logprobs.wgsl")),
    ("adamw", include_str!("../../shaders/adamw.wgsl")),
    ("attention", include_str!("../../shaders/attention.wgsl")),
    ("preference", include_str!("../../shaders/preference.wgsl")),
    ("ppo", include_str!("../../shaders/ppo.wgsl")),
    ("sampling", include_str!("../../shaders/sampling.wgsl")),
    ("toy_mlp", include_str!("../../shaders/toy_mlp.wgsl")),
];
