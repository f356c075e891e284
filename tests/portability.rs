//! Portability without the hardware: every entry point of every `shaders/*.wgsl` goes through naga's back ends for
//! the platforms wgpu targets, with the options wgpu 30 itself passes there (read from wgpu-hal 30's metal, dx12,
//! vulkan and gles back ends), and every kernel's workgroup is checked against WebGPU's default limits.
//!
//! - Metal: MSL 2.0 (macOS 10.13) to 4.0 (macOS 26), an explicit per-entry-point resource map (no faked bindings),
//!   bounds checks `Restrict` (wgpu's default) and `Unchecked` (`create_shader_module_trusted`).
//! - DX12: HLSL shader model 5.1 (FXC) and 6.0 (the lowest DXC model wgpu uses), CBV/SRV/UAV registers assigned as
//!   wgpu's root signature does, the special-constants buffer for `num_workgroups`, `restrict_indexing` on and off.
//! - Vulkan: SPIR-V 1.0, 1.3, 1.5, 1.6 (Vulkan 1.0 to 1.3), only the capabilities Vulkan always has, buffer bounds
//!   checks `Restrict` (no robustBufferAccess2) and `Unchecked` (with it), workgroup zeroing polyfilled and native.
//! - OpenGL / GLES (wgpu's GL back end, compute needs ES 3.1 or GL 4.3): GLSL 310 es and 430.
//!
//! The `*_subgroup` shaders (subgroup operations; compiled only where wgpu gives the device its SUBGROUP feature, which
//! it offers on Vulkan 1.1+, DX12 with DXC and Metal, never on GL or in a browser) are validated with naga's SUBGROUP
//! capability and translated only for those targets: SPIR-V 1.3+ with the GroupNonUniform capabilities, HLSL 6.0, and
//! every MSL version above (naga writes its SIMD-group functions for each).
//!
//! Each failure names the shader, the entry point, the target and naga's message; all failures are listed at once.
//! The SPIR-V and GLSL are then checked by the Khronos validators (`spirv-val`, `glslangValidator`; Debian's
//! spirv-tools and glslang-tools, installed by scripts/test). No GPU is needed for any of that. What it cannot show:
//! that Apple's Metal compiler or DXC/FXC accept the MSL and HLSL (neither is packaged for Linux in the registries
//! this project can use; see the README's "Platforms" section).
//!
//! Also here: every kernel within WebGPU's default workgroup limits (computed from naga's module), and every buffer
//! checked against the adapter's limits before it is created (`dpo3d::gpu::check_buffer`).

mod common;

use naga::back::{glsl, hlsl, msl, spv};
use naga::proc::{BoundsCheckPolicies, BoundsCheckPolicy};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use naga::{AddressSpace, Module, ResourceBinding, ShaderStage, StorageAccess};

/// A kernel as a pipeline sees it: the module reduced to one entry point (what wgpu does before translating).
struct Kernel {
    shader: &'static str,
    /// A `*_subgroup` shader's entry point (see the file's header).
    subgroups: bool,
    entry: String,
    module: Module,
    info: ModuleInfo,
}

/// What a binding is in the pipeline layout wgpu derives from the entry point ("auto" layout).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Res {
    Uniform,
    Storage { read_only: bool },
}

impl Kernel {
    fn name(&self) -> String {
        format!("{}.wgsl::{}", self.shader, self.entry)
    }

    /// The bindings the entry point uses, by (group, binding), in binding order.
    fn bindings(&self) -> Vec<(ResourceBinding, Res)> {
        let fi = self.info.get_entry_point(0);
        let mut out = Vec::new();
        for (h, var) in self.module.global_variables.iter() {
            let (Some(rb), false) = (var.binding, fi[h].is_empty()) else { continue };
            let res = match var.space {
                AddressSpace::Uniform => Res::Uniform,
                AddressSpace::Storage { access } => Res::Storage { read_only: !access.contains(StorageAccess::STORE) },
                other => panic!("{}: binding {rb:?} in address space {other:?}, not a buffer", self.name()),
            };
            out.push((rb, res));
        }
        out.sort_by_key(|(rb, _)| (rb.group, rb.binding));
        out
    }
}

fn validate(module: &Module, what: &str, caps: Capabilities) -> ModuleInfo {
    Validator::new(ValidationFlags::all(), caps).validate(module).unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

/// Every compute entry point of every registered shader, each processed as wgpu does before handing it to a back
/// end (`process_overrides` with the entry point: retains that entry point and compacts the module).
fn kernels() -> Vec<Kernel> {
    let mut out = Vec::new();
    for (shader, src) in dpo3d::ops::SHADERS {
        let module =
            naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{shader}.wgsl: {}", e.emit_to_string(src)));
        let subgroups = shader.ends_with("_subgroup");
        let info = validate(&module, shader, if subgroups { Capabilities::SUBGROUP } else { Capabilities::default() });
        assert!(!module.entry_points.is_empty(), "{shader}.wgsl has no entry point");
        for ep in &module.entry_points {
            assert_eq!(ep.stage, ShaderStage::Compute, "{shader}.wgsl::{} is not a compute entry point", ep.name);
            let (m, i) = naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                Some((ShaderStage::Compute, ep.name.as_str())),
                &Default::default(),
            )
            .unwrap_or_else(|e| panic!("{shader}.wgsl::{}: process_overrides: {e:?}", ep.name));
            let (module, info) = (m.into_owned(), i.into_owned());
            assert_eq!(module.entry_points.len(), 1);
            out.push(Kernel { shader, subgroups, entry: ep.name.clone(), module, info });
        }
    }
    out
}

fn policies(p: BoundsCheckPolicy) -> BoundsCheckPolicies {
    // Binding arrays: wgpu leaves them unchecked on every back end (dpo3d uses none).
    BoundsCheckPolicies { index: p, buffer: p, image_load: p, binding_array: BoundsCheckPolicy::Unchecked }
}

/// wgpu-hal metal/device.rs `load_shader` + `create_pipeline_layout`: one buffer slot per binding in layout order,
/// storage buffers `mutable` unless read-only, then the sizes buffer (for `arrayLength`) when any storage is bound.
fn to_msl(k: &Kernel, lang_version: (u8, u8), bounds: BoundsCheckPolicy) -> Result<String, String> {
    let mut resources = msl::BindingMap::default();
    let mut slot: u8 = 0;
    let mut any_storage = false;
    for (rb, res) in k.bindings() {
        let mutable = match res {
            Res::Uniform => false,
            Res::Storage { read_only } => {
                any_storage = true;
                !read_only
            }
        };
        resources.insert(rb, msl::BindTarget { buffer: Some(slot), mutable, ..Default::default() });
        slot += 1;
    }
    let ep_resources =
        msl::EntryPointResources { resources, immediates_buffer: None, sizes_buffer: any_storage.then_some(slot) };
    let options = msl::Options {
        lang_version,
        per_entry_point_map: msl::EntryPointResourceMap::from([(k.entry.clone(), ep_resources)]),
        inline_samplers: Default::default(),
        spirv_cross_compatibility: false,
        fake_missing_bindings: false,
        bounds_check_policies: policies(bounds),
        zero_initialize_workgroup_memory: true,
        force_loop_bounding: true,
        task_dispatch_limits: None,
        mesh_shader_primitive_indices_clamp: true,
        emit_int_div_checks: true,
        ray_query_initialization_tracking: true,
    };
    let pipeline_options = msl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, k.entry.clone())),
        allow_and_force_point_size: false,
        vertex_pulling_transform: true,
        vertex_buffer_mappings: Vec::new(),
        binding_array_length_map: Default::default(),
    };
    let (src, info) =
        msl::write_string(&k.module, &k.info, &options, &pipeline_options).map_err(|e| format!("{e} ({e:?})"))?;
    info.entry_point_names[0].as_ref().map_err(|e| format!("entry point: {e}"))?;
    Ok(src)
}

/// wgpu-hal dx12/device.rs `create_pipeline_layout` + `load_shader`: registers in space 0, counted separately for
/// CBVs (uniform), SRVs (read-only storage, `ByteAddressBuffer`) and UAVs (read-write storage,
/// `RWByteAddressBuffer`); the special-constants root constants (which carry `num_workgroups`) in the next CBV.
fn to_hlsl(k: &Kernel, shader_model: hlsl::ShaderModel, restrict_indexing: bool) -> Result<String, String> {
    let mut binding_map = hlsl::BindingMap::default();
    let (mut cbv, mut srv, mut uav) = (0u32, 0u32, 0u32);
    for (rb, res) in k.bindings() {
        let counter = match res {
            Res::Uniform => &mut cbv,
            Res::Storage { read_only: true } => &mut srv,
            Res::Storage { read_only: false } => &mut uav,
        };
        let target = hlsl::BindTarget {
            space: 0,
            register: *counter,
            binding_array_size: None,
            dynamic_storage_buffer_offsets_index: None,
            restrict_indexing: false,
        };
        *counter += 1;
        binding_map.insert(rb, target);
    }
    let special = hlsl::BindTarget {
        space: 0,
        register: cbv,
        binding_array_size: None,
        dynamic_storage_buffer_offsets_index: None,
        restrict_indexing: false,
    };
    let options = hlsl::Options {
        shader_model,
        binding_map,
        fake_missing_bindings: false,
        special_constants_binding: Some(special),
        zero_initialize_workgroup_memory: true,
        restrict_indexing,
        force_loop_bounding: true,
        ..Default::default()
    };
    let pipeline_options = hlsl::PipelineOptions { entry_point: Some((ShaderStage::Compute, k.entry.clone())) };
    let mut src = String::new();
    let mut w = hlsl::Writer::new(&mut src, &options, &pipeline_options);
    let mut info = w.write(&k.module, &k.info, None).map_err(|e| format!("{e} ({e:?})"))?;
    assert_eq!(info.entry_point_names.len(), 1);
    info.entry_point_names.pop().unwrap().map_err(|e| format!("entry point: {e}"))?;
    Ok(src)
}

/// wgpu-hal vulkan/adapter.rs (the device's `naga_options`) + device.rs (`create_bind_group_layout` renumbers each
/// group's entries densely in layout order; `create_pipeline_layout` turns that into naga's binding map), the
/// capabilities every Vulkan device has, no debug info.
fn to_spirv(
    k: &Kernel,
    lang_version: (u8, u8),
    buffer_bounds: BoundsCheckPolicy,
    zero_init: spv::ZeroInitializeWorkgroupMemoryMode,
) -> Result<Vec<u32>, String> {
    use spv::Capability as C;
    let mut binding_map = spv::BindingMap::default();
    let mut next = std::collections::HashMap::<u32, u32>::new();
    for (rb, _) in k.bindings() {
        let n = next.entry(rb.group).or_insert(0);
        binding_map.insert(rb, spv::BindingInfo { descriptor_set: rb.group, binding: *n, binding_array_size: None });
        *n += 1;
    }
    let mut capabilities = vec![
        C::Shader,
        C::Matrix,
        C::Sampled1D,
        C::Image1D,
        C::ImageQuery,
        C::DerivativeControl,
        C::StorageImageExtendedFormats,
    ];
    if k.subgroups {
        // What wgpu-hal's vulkan adapter adds with the SUBGROUP feature.
        capabilities.extend([
            C::GroupNonUniform,
            C::GroupNonUniformVote,
            C::GroupNonUniformArithmetic,
            C::GroupNonUniformBallot,
            C::GroupNonUniformShuffle,
            C::GroupNonUniformShuffleRelative,
            C::GroupNonUniformQuad,
        ]);
    }
    let options = spv::Options {
        lang_version,
        flags: spv::WriterFlags::LABEL_VARYINGS | spv::WriterFlags::FORCE_POINT_SIZE,
        fake_missing_bindings: false,
        binding_map,
        capabilities: Some(capabilities.into_iter().collect()),
        bounds_check_policies: BoundsCheckPolicies {
            index: BoundsCheckPolicy::Restrict,
            buffer: buffer_bounds,
            image_load: buffer_bounds,
            binding_array: BoundsCheckPolicy::Unchecked,
        },
        zero_initialize_workgroup_memory: zero_init,
        force_loop_bounding: true,
        ray_query_initialization_tracking: true,
        trace_ray_argument_validation: true,
        use_storage_input_output_16: false,
        debug_info: None,
        task_dispatch_limits: None,
        mesh_shader_primitive_indices_clamp: true,
        emit_int_div_checks: true,
    };
    let pipeline_options = spv::PipelineOptions { shader_stage: ShaderStage::Compute, entry_point: k.entry.clone() };
    spv::write_vec(&k.module, &k.info, &options, Some(&pipeline_options)).map_err(|e| format!("{e} ({e:?})"))
}

/// wgpu-hal gles/device.rs `create_pipeline_layout` + `create_shader`: a slot counter per kind (uniform blocks and
/// storage blocks are numbered separately); no index or buffer bounds checks (GL has none to offer).
fn to_glsl(k: &Kernel, version: glsl::Version) -> Result<String, String> {
    let mut binding_map = glsl::BindingMap::default();
    let (mut uniforms, mut storages) = (0u8, 0u8);
    for (rb, res) in k.bindings() {
        let counter = if res == Res::Uniform { &mut uniforms } else { &mut storages };
        binding_map.insert(rb, *counter);
        *counter += 1;
    }
    let options = glsl::Options {
        version,
        writer_flags: glsl::WriterFlags::ADJUST_COORDINATE_SPACE | glsl::WriterFlags::FORCE_POINT_SIZE,
        binding_map,
        zero_initialize_workgroup_memory: true,
    };
    let pipeline_options =
        glsl::PipelineOptions { shader_stage: ShaderStage::Compute, entry_point: k.entry.clone(), multiview: None };
    let mut src = String::new();
    let mut w = glsl::Writer::new(
        &mut src,
        &k.module,
        &k.info,
        &options,
        &pipeline_options,
        policies(BoundsCheckPolicy::Unchecked),
    )
    .map_err(|e| format!("{e} ({e:?})"))?;
    w.write().map_err(|e| format!("{e} ({e:?})"))?;
    Ok(src)
}

/// Runs `f` for every kernel and every option set; panics listing every failure. `f` tries `variants` option sets
/// for every kernel but the subgroup ones, which it tries on the targets that have subgroups (none on GL).
fn check_all(backend: &str, variants: usize, f: impl Fn(&Kernel) -> Vec<(String, Result<usize, String>)>) {
    let kernels = kernels();
    let mut failures = Vec::new();
    let (mut translated, mut tried) = (0, 0);
    for k in &kernels {
        let results = f(k);
        assert!(k.subgroups || results.len() == variants, "{}: {} of {variants} option sets", k.name(), results.len());
        tried += results.len();
        for (target, r) in results {
            match r {
                Ok(len) if len > 0 => translated += 1,
                Ok(_) => failures.push(format!("{} -> {backend} {target}: empty output", k.name())),
                Err(e) => failures.push(format!("{} -> {backend} {target}: {e}", k.name())),
            }
        }
    }
    assert!(failures.is_empty(), "{} translations to {backend} failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(translated, tried, "{backend}: not every (entry point, option set) was translated");
    eprintln!("{backend}: {} entry points x {variants} option sets translated", kernels.len());
}

#[test]
fn should_find_every_entry_point_of_every_shader() {
    let kernels = kernels();
    for (shader, _) in dpo3d::ops::SHADERS {
        assert!(kernels.iter().any(|k| k.shader == *shader), "{shader}.wgsl: no kernel collected");
    }
    // A kernel binds at least one buffer (its output); a kernel with none would mean binding collection is broken.
    for k in &kernels {
        assert!(!k.bindings().is_empty(), "{}: no bindings found", k.name());
    }
}

#[test]
fn should_translate_every_kernel_to_msl_for_metal() {
    let versions = [(2, 0), (2, 1), (2, 2), (2, 3), (2, 4), (3, 0), (3, 1), (3, 2), (4, 0)];
    let bounds = [BoundsCheckPolicy::Restrict, BoundsCheckPolicy::Unchecked];
    check_all("MSL", versions.len() * bounds.len(), |k| {
        let mut out = Vec::new();
        for v in versions {
            for b in bounds {
                out.push((format!("{}.{} bounds {b:?}", v.0, v.1), to_msl(k, v, b).map(|s| s.len())));
            }
        }
        out
    });
}

#[test]
fn should_translate_every_kernel_to_hlsl_for_dx12() {
    let models = [hlsl::ShaderModel::V5_1, hlsl::ShaderModel::V6_0];
    check_all("HLSL", models.len() * 2, |k| {
        let mut out = Vec::new();
        // Wave intrinsics (subgroups) need shader model 6.0 (DXC), the only one wgpu offers SUBGROUP with.
        for sm in models.into_iter().filter(|sm| !k.subgroups || *sm == hlsl::ShaderModel::V6_0) {
            for restrict in [true, false] {
                out.push((
                    format!("{} restrict_indexing={restrict}", sm.to_str()),
                    to_hlsl(k, sm, restrict).map(|s| s.len()),
                ));
            }
        }
        out
    });
}

#[test]
fn should_translate_every_kernel_to_spirv_for_vulkan() {
    let versions = [(1, 0), (1, 3), (1, 5), (1, 6)];
    let bounds = [BoundsCheckPolicy::Restrict, BoundsCheckPolicy::Unchecked];
    let zero = [spv::ZeroInitializeWorkgroupMemoryMode::Polyfill, spv::ZeroInitializeWorkgroupMemoryMode::Native];
    check_all("SPIR-V", versions.len() * bounds.len() * zero.len(), |k| {
        let mut out = Vec::new();
        // Subgroup operations (GroupNonUniform*) are SPIR-V 1.3, Vulkan 1.1.
        for v in versions.into_iter().filter(|v| !k.subgroups || *v >= (1, 3)) {
            for b in bounds {
                for z in zero {
                    let words = to_spirv(k, v, b, z);
                    // The SPIR-V magic number opens every module (SPIR-V spec 2.3).
                    let words = words.and_then(|w| {
                        if w.first() == Some(&0x0723_0203) {
                            Ok(w.len())
                        } else {
                            Err("no SPIR-V magic".into())
                        }
                    });
                    out.push((format!("{}.{} buffer bounds {b:?} zero-init {z:?}", v.0, v.1), words));
                }
            }
        }
        out
    });
}

#[test]
fn should_translate_every_kernel_to_glsl_for_gl() {
    let versions = [glsl::Version::new_gles(310), glsl::Version::Desktop(430)];
    // wgpu's GL back end offers no subgroups, so the subgroup kernels never run there: they are not translated.
    check_all("GLSL", versions.len(), |k| {
        if k.subgroups {
            return vec![];
        }
        versions.iter().map(|v| (format!("{v}"), to_glsl(k, *v).map(|s| s.len()))).collect()
    });
}

// ---- WebGPU default limits ----

/// WebGPU's default limits (the WebGPU spec, "Limits"): what every browser and adapter guarantees.
const MAX_WORKGROUP_STORAGE: u64 = 16384;
const MAX_INVOCATIONS: u32 = 256;
const MAX_SIZE_XYZ: [u32; 3] = [256, 256, 64];
const MAX_STORAGE_BUFFERS_PER_STAGE: usize = 8;
const MAX_UNIFORM_BUFFERS_PER_STAGE: usize = 12;

/// Workgroup storage an entry point needs, as WebGPU counts it: the sum over the `var<workgroup>` it statically uses
/// of roundUp(16, SizeOf(T)) (WebGPU spec, "maxComputeWorkgroupStorageSize"). Sizes from naga's layouter.
fn workgroup_bytes(k: &Kernel) -> u64 {
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(k.module.to_ctx()).unwrap();
    let fi = k.info.get_entry_point(0);
    k.module
        .global_variables
        .iter()
        .filter(|(h, v)| v.space == AddressSpace::WorkGroup && !fi[*h].is_empty())
        .map(|(_, v)| (layouter[v.ty].size as u64).div_ceil(16) * 16)
        .sum()
}

/// Every way `k` exceeds a WebGPU default limit.
fn limit_violations(k: &Kernel) -> Vec<String> {
    let mut v = Vec::new();
    let ws = k.module.entry_points[0].workgroup_size;
    let invocations: u32 = ws.iter().product();
    if invocations > MAX_INVOCATIONS {
        v.push(format!("{invocations} invocations per workgroup {ws:?} > {MAX_INVOCATIONS}"));
    }
    for d in 0..3 {
        if ws[d] > MAX_SIZE_XYZ[d] {
            v.push(format!("workgroup size {ws:?}: dimension {d} > {}", MAX_SIZE_XYZ[d]));
        }
    }
    let bytes = workgroup_bytes(k);
    if bytes > MAX_WORKGROUP_STORAGE {
        v.push(format!("{bytes} bytes of workgroup storage > {MAX_WORKGROUP_STORAGE}"));
    }
    let b = k.bindings();
    let storage = b.iter().filter(|(_, r)| matches!(r, Res::Storage { .. })).count();
    if storage > MAX_STORAGE_BUFFERS_PER_STAGE {
        v.push(format!("{storage} storage buffers > {MAX_STORAGE_BUFFERS_PER_STAGE} per shader stage"));
    }
    let uniform = b.iter().filter(|(_, r)| *r == Res::Uniform).count();
    if uniform > MAX_UNIFORM_BUFFERS_PER_STAGE {
        v.push(format!("{uniform} uniform buffers > {MAX_UNIFORM_BUFFERS_PER_STAGE} per shader stage"));
    }
    v
}

#[test]
fn should_keep_every_kernel_within_webgpu_default_limits() {
    let mut failures = Vec::new();
    let mut largest = (0u64, String::new());
    for k in kernels() {
        for v in limit_violations(&k) {
            failures.push(format!("{}: {v}", k.name()));
        }
        let bytes = workgroup_bytes(&k);
        if bytes > largest.0 {
            largest = (bytes, k.name());
        }
    }
    assert!(failures.is_empty(), "kernels over WebGPU's default limits:\n{}", failures.join("\n"));
    eprintln!("largest workgroup storage: {} bytes ({})", largest.0, largest.1);
}

/// The limit check itself can fail: small WGSL kernels just over each limit are caught, and ones just under are
/// not. Expected byte counts are worked by hand from the WebGPU rule (a 4-byte f32 array of n elements is 4n
/// bytes; a lone u32 rounds up to 16).
#[test]
fn should_catch_kernels_over_the_limits() {
    let kernel = |src: &str| {
        let module = naga::front::wgsl::parse_str(src).unwrap();
        let info = validate(&module, "snippet", Capabilities::default());
        Kernel { shader: "snippet", subgroups: false, entry: "main".into(), module, info }
    };
    let body = |decls: &str, size: &str, uses: &str| {
        format!(
            "@group(0) @binding(0) var<storage, read_write> out: array<f32>;\n{decls}\n\
             @compute @workgroup_size({size}) fn main(@builtin(local_invocation_index) i: u32) {{ {uses} }}"
        )
    };
    // 4096 f32 = 16384 bytes plus a u32 (16 after rounding) = 16400 > 16384.
    let over = kernel(&body(
        "var<workgroup> a: array<f32, 4096>; var<workgroup> n: u32;",
        "64",
        "a[i] = 1.0; n = i; out[i] = a[i] + f32(n);",
    ));
    assert_eq!(workgroup_bytes(&over), 16400);
    assert_eq!(limit_violations(&over).len(), 1, "{:?}", limit_violations(&over));
    // 4092 f32 = 16368, plus 16 for the u32 = 16384: exactly the limit, allowed.
    let at = kernel(&body(
        "var<workgroup> a: array<f32, 4092>; var<workgroup> n: u32;",
        "64",
        "a[i] = 1.0; n = i; out[i] = a[i] + f32(n);",
    ));
    assert_eq!(workgroup_bytes(&at), 16384);
    assert!(limit_violations(&at).is_empty(), "{:?}", limit_violations(&at));
    // A workgroup variable the entry point never touches does not count.
    let unused = kernel(&body("var<workgroup> a: array<f32, 8192>;", "64", "out[i] = 1.0;"));
    assert_eq!(workgroup_bytes(&unused), 0);
    // 16 x 32 = 512 invocations; z = 65 exceeds the z limit of 64 (and 65 invocations is within 256).
    assert_eq!(limit_violations(&kernel(&body("", "16, 32", "out[i] = 1.0;"))).len(), 1);
    assert_eq!(limit_violations(&kernel(&body("", "1, 1, 65", "out[i] = 1.0;"))).len(), 1);
    assert!(limit_violations(&kernel(&body("", "16, 16", "out[i] = 1.0;"))).is_empty());
}

// ---- Buffers against the adapter's limits ----

/// Every limit `check_buffer` applies, on made-up limits (no GPU): the error names the buffer, the bytes asked, the
/// bytes allowed and which limit; a size exactly at a limit passes.
#[test]
fn should_check_buffer_sizes_against_each_adapter_limit() {
    use dpo3d::gpu::check_buffer;
    use wgpu::BufferUsages as U;
    let limits = wgpu::Limits {
        max_buffer_size: 1000,
        max_storage_buffer_binding_size: 800,
        max_uniform_buffer_binding_size: 400,
        ..wgpu::Limits::default()
    };
    let storage = U::STORAGE | U::COPY_SRC | U::COPY_DST;
    assert!(check_buffer(&limits, "test", "a", 800, storage).is_ok());
    assert!(check_buffer(&limits, "test", "a", 1000, U::COPY_DST).is_ok());
    assert!(check_buffer(&limits, "test", "a", 400, storage | U::UNIFORM).is_ok());
    for (bytes, usage, limit, max) in [
        (1001, U::COPY_DST, "max_buffer_size", 1000),
        (801, storage, "max_storage_buffer_binding_size", 800),
        (401, U::UNIFORM | U::COPY_DST, "max_uniform_buffer_binding_size", 400),
    ] {
        let e = check_buffer(&limits, "test adapter", "logits", bytes, usage).unwrap_err().to_string();
        for want in ["\"logits\"", &format!("{bytes} bytes"), &format!("at most {max} bytes"), limit, "test adapter"] {
            assert!(e.contains(want), "error {e:?} does not mention {want:?}");
        }
    }
}

/// A GPT whose (B, T, V) logits exceed this adapter's storage-binding limit is refused with an error, before that
/// buffer exists: V is large and the width tiny so that every buffer allocated before the logits is a few MiB,
/// and B is chosen from the adapter's own limit (lavapipe: 128 MiB; a big GPU: 2 GiB or more).
#[test]
fn should_refuse_a_gpt_whose_logits_exceed_the_binding_limit() {
    let gpu = common::gpu();
    let max = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size);
    let cfg =
        dpo3d::model::GptConfig { vocab_size: 65536, context: 16, layers: 1, heads: 1, width: 4, scalar_head: false };
    let t = 16;
    let b = (max / (cfg.vocab_size as u64 * t as u64 * 4) + 1) as usize; // B*T*V*4 > max
    let n_params: usize = cfg.param_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    let params = vec![0.0f32; n_params];
    let err = match dpo3d::model::Gpt::new(&gpu, &cfg, b, t, &params) {
        Ok(_) => panic!("a GPT with {} bytes of logits was built on an adapter allowing {max}", b * t * 65536 * 4),
        Err(e) => e.to_string(),
    };
    eprintln!("{err}");
    let bytes = (b * t * cfg.vocab_size * 4).to_string();
    for want in ["\"logits\"", bytes.as_str(), &format!("at most {max} bytes"), gpu.info.name.as_str()] {
        assert!(err.contains(want), "error {err:?} does not mention {want:?}");
    }
}

/// Readbacks larger than the adapter's `max_buffer_size` are spread over several staging buffers and still return
/// every tensor intact. The limit is lowered on this `Gpu` to 1 KiB; the tensors are 800, 224, 1000, 28, 1024 and 4
/// bytes, which fill staging buffers in order as 800+224 = 1024 | 1000 | 28 | 1024 | 4: five of them.
#[test]
fn should_split_readbacks_over_the_buffer_size_limit() {
    use dpo3d::gpu::{Readback, Tensor};
    let mut gpu = common::gpu();
    let lens = [200usize, 56, 250, 7, 256, 1];
    let data: Vec<Vec<f32>> = lens.iter().map(|&n| common::randn(n as u64, n, 1.0)).collect();
    let tensors: Vec<Tensor> = data.iter().map(|d| Tensor::from_f32(&gpu, "readback part", d).unwrap()).collect();
    gpu.limits.max_buffer_size = 1024;
    // Tensors created under the lowered limit are checked against it too.
    assert!(Tensor::zeros(&gpu, "too big", 257).is_err());
    let rb = Readback::new(&gpu, &tensors.iter().collect::<Vec<_>>());
    assert_eq!(rb.staging_buffers(), 5);
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    rb.record(&mut enc);
    gpu.queue.submit([enc.finish()]);
    let got = rb.fetch_blocking(&gpu).unwrap();
    assert_eq!(got, data);
}

// ---- The translated kernels through the platforms' own front ends ----

/// Runs `tool args.. file` and returns its output when it fails.
fn run_tool(tool: &str, args: &[&str], file: &std::path::Path) -> Result<(), String> {
    let out = std::process::Command::new(tool).args(args).arg(file).output().map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// `true` when `tool` can be run; when it cannot, fails if `DPO3D_REQUIRE_SHADER_TOOLS=1` (scripts/test sets it and
/// installs the tools), else says the check is skipped.
fn have_tool(tool: &str) -> bool {
    let ok = std::process::Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        let required = std::env::var("DPO3D_REQUIRE_SHADER_TOOLS").is_ok_and(|v| v == "1");
        assert!(!required, "{tool} not found (Debian: apt-get install spirv-tools glslang-tools)");
        eprintln!("SKIPPED: {tool} not found (Debian: apt-get install spirv-tools glslang-tools)");
    }
    ok
}

/// Beyond naga translating: the Khronos validators accept what it wrote. `spirv-val` checks every SPIR-V module
/// against the Vulkan environment it targets (SPIR-V 1.0 for Vulkan 1.0, 1.6 for Vulkan 1.3); `glslangValidator`
/// compiles every GLSL compute shader (310 es for GLES 3.1, 430 for desktop GL).
#[test]
fn should_pass_the_khronos_validators() {
    if !have_tool("spirv-val") || !have_tool("glslangValidator") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dpo3d-portability-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The validators do reject: a module cut short and a shader with a type error.
    let k = &kernels()[0];
    let words =
        to_spirv(k, (1, 0), BoundsCheckPolicy::Restrict, spv::ZeroInitializeWorkgroupMemoryMode::Polyfill).unwrap();
    let cut = dir.join("cut.spv");
    std::fs::write(&cut, bytemuck::cast_slice::<u32, u8>(&words[..words.len() / 2])).unwrap();
    assert!(run_tool("spirv-val", &["--target-env", "vulkan1.0"], &cut).is_err(), "spirv-val accepted a cut module");
    let bad = dir.join("bad.comp");
    std::fs::write(&bad, "#version 310 es\nlayout(local_size_x = 1) in;\nvoid main() { float x = vec2(1.0); }\n")
        .unwrap();
    assert!(run_tool("glslangValidator", &[], &bad).is_err(), "glslangValidator accepted a type error");
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut glsl_files = Vec::new();
    for k in kernels() {
        let stem = format!("{}-{}", k.shader, k.entry);
        let envs: &[((u8, u8), &str)] = if k.subgroups {
            &[((1, 3), "vulkan1.1"), ((1, 6), "vulkan1.3")] // subgroups need Vulkan 1.1
        } else {
            &[((1, 0), "vulkan1.0"), ((1, 6), "vulkan1.3")]
        };
        for &(v, env) in envs {
            let words = to_spirv(&k, v, BoundsCheckPolicy::Restrict, spv::ZeroInitializeWorkgroupMemoryMode::Polyfill)
                .unwrap_or_else(|e| panic!("{}: {e}", k.name()));
            let path = dir.join(format!("{stem}-{env}.spv"));
            std::fs::write(&path, bytemuck::cast_slice::<u32, u8>(&words)).unwrap();
            if let Err(e) = run_tool("spirv-val", &["--target-env", env], &path) {
                failures.push(format!("{} SPIR-V {}.{} (spirv-val --target-env {env}): {e}", k.name(), v.0, v.1));
            }
            checked += 1;
        }
        if k.subgroups {
            continue; // no GL kernel (see should_translate_every_kernel_to_glsl_for_gl)
        }
        for (version, tag) in [(glsl::Version::new_gles(310), "es310"), (glsl::Version::Desktop(430), "430")] {
            let src = to_glsl(&k, version).unwrap_or_else(|e| panic!("{}: {e}", k.name()));
            let path = dir.join(format!("{stem}-{tag}.comp"));
            std::fs::write(&path, src).unwrap();
            glsl_files.push(path);
            checked += 1;
        }
    }
    // One glslangValidator run for all GLSL files (it starts slowly); its output names each rejected file.
    let out = std::process::Command::new("glslangValidator").args(&glsl_files).output().unwrap();
    if !out.status.success() {
        failures.push(format!(
            "glslangValidator: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(failures.is_empty(), "{} of {checked} rejected:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{checked} SPIR-V modules and GLSL shaders accepted by spirv-val and glslangValidator");
}
