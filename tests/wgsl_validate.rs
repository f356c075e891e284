//! Every `shaders/*.wgsl` parses and validates with naga (readable diagnostics without a GPU), and every file in
//! `shaders/` is registered in `dpo3d::ops::SHADERS` so none is forgotten.

#[test]
fn should_validate_every_shader_with_naga() {
    use naga::valid::Capabilities;
    for (name, src) in dpo3d::ops::SHADERS {
        let module =
            naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(src)));
        // Only the *_subgroup shaders may use subgroup operations (they are compiled only where the device has them).
        let caps = if name.ends_with("_subgroup") { Capabilities::SUBGROUP } else { Capabilities::default() };
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(src)));
    }
    // And the capability is needed: without it the subgroup shader is refused, so the line above checks something.
    let (_, src) = dpo3d::ops::SHADERS.iter().find(|(n, _)| *n == "matmul_subgroup").unwrap();
    let module = naga::front::wgsl::parse_str(src).unwrap();
    let mut plain = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), Capabilities::default());
    assert!(plain.validate(&module).is_err(), "matmul_subgroup.wgsl validates without subgroups");
}

#[test]
fn should_register_every_shader_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("wgsl") {
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            assert!(dpo3d::ops::SHADERS.iter().any(|(n, _)| *n == stem), "shaders/{stem}.wgsl is not in ops::SHADERS");
        }
    }
}
