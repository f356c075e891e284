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

/// dpo3d compiles its shaders without naga's loop bound (`gpu::context`), which is sound only while every loop ends.
/// So every loop must be a `for` whose counter moves toward its bound each iteration: counting up (`i++`, `i += s`,
/// `i = i + s`, with `i < b`, `i <= b` or `i + 1u < b`) or halving down to zero (`s = s / 2u`, `s >>= 1u` with
/// `s > 0u`); no `loop` or `while`. Not checked here: the bounds themselves (parameters under the buffers' sizes), that
/// a step held in a variable (a grid's stride) is nonzero, and that no loop body assigns its counter.
#[test]
fn should_write_every_loop_as_a_for_toward_its_bound() {
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    for (name, src) in dpo3d::ops::SHADERS {
        let code: String = src.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
        let tokens: Vec<&str> = code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).collect();
        assert!(!tokens.contains(&"while") && !tokens.contains(&"loop"), "{name}.wgsl: a `while` or `loop`");
        let mut found = 0;
        for (at, _) in code.match_indices("for (") {
            let header = &code[at + 5..at + 5 + code[at + 5..].find(") {").expect("for header")];
            let parts: Vec<&str> = header.split(';').map(str::trim).collect();
            let (var, cond, step) = match parts[..] {
                [init, cond, step] => (init.strip_prefix("var ").and_then(|i| i.split(" =").next()), cond, step),
                _ => panic!("{name}.wgsl: `for ({header})`"),
            };
            let v = var.unwrap_or_else(|| panic!("{name}.wgsl: `for ({header})` does not declare its counter"));
            let up = step == format!("{v}++")
                || step.strip_prefix(&format!("{v} += ")).is_some_and(|s| word(s) && s != "0u")
                || step.strip_prefix(&format!("{v} = {v} + ")).is_some_and(|s| word(s) && s != "0u");
            let down = [format!("{v} = {v} / 2u"), format!("{v} >>= 1u"), format!("{v} = {v} >> 1u")]
                .contains(&step.to_string());
            let ok = if up {
                [format!("{v} < "), format!("{v} <= "), format!("{v} + 1u < ")]
                    .iter()
                    .any(|p| cond.starts_with(p.as_str()))
            } else {
                down && cond == format!("{v} > 0u")
            };
            assert!(ok, "{name}.wgsl: `for ({header})` does not visibly move toward its bound");
            found += 1;
        }
        assert!(found > 0 || !tokens.contains(&"for"), "{name}.wgsl: loops not recognised");
    }
}
