//! Tests of the test helpers themselves (tests/common): a comparison helper that cannot fail would make every
//! GPU-vs-reference test pass, so each way it must fail is shown failing.

mod common;
use common::{assert_close, assert_close_allowing_inf};

#[test]
fn should_pass_within_tolerance() {
    assert_close("x", &[1.0, -2.0, 3.0005], &[1.0, -2.0, 3.0], 1e-3, 0.0);
    assert_close("x", &[100.5], &[100.0], 0.0, 1e-2);
}

#[test]
#[should_panic(expected = "expected value NaN is not finite")]
fn should_fail_on_nan_expected_vs_finite_actual() {
    assert_close("x", &[1.0, 2.0], &[1.0, f32::NAN], 1.0, 1.0);
}

#[test]
#[should_panic(expected = "is not finite")]
fn should_fail_on_infinite_expected_by_default() {
    assert_close("x", &[f32::INFINITY], &[f32::INFINITY], 1.0, 1.0);
}

#[test]
#[should_panic(expected = "is not finite")]
fn should_fail_on_nan_actual() {
    assert_close("x", &[f32::NAN], &[0.0], 1.0, 1.0);
}

#[test]
#[should_panic(expected = "element 1")]
fn should_fail_outside_tolerance_and_name_the_element() {
    assert_close("x", &[1.0, 2.1], &[1.0, 2.0], 1e-3, 1e-3);
}

#[test]
fn should_accept_the_same_infinity_only_when_opted_in() {
    assert_close_allowing_inf("x", &[f32::NEG_INFINITY, 1.0], &[f32::NEG_INFINITY, 1.0], 0.0, 0.0);
}

#[test]
#[should_panic(expected = "got inf, want -inf")]
fn should_fail_on_the_opposite_infinity_even_when_opted_in() {
    assert_close_allowing_inf("x", &[f32::INFINITY], &[f32::NEG_INFINITY], 1.0, 1.0);
}

#[test]
#[should_panic(expected = "expected value NaN")]
fn should_fail_on_nan_expected_even_when_opted_in() {
    assert_close_allowing_inf("x", &[0.0], &[f32::NAN], 1.0, 1.0);
}
