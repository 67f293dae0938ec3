//! `pow`, defined here so that `d` does not load glibc's `libm.so.6` at every
//! start for this one function (about 0.25 ms median per start here:
//! bench/RESULTS.md, issue 20 target 1). Its only caller is indicatif's ETA
//! estimate for `d cp`'s progress bar (`f64::powf`, which compiles to a call
//! to `pow`). The result is the `libm` crate's (rust-lang's port of musl's
//! libm), not arithmetic of our own.

/// `x` raised to the power `y`, as C's `pow(3)` (IEEE 754 doubles; NaN,
/// infinities and signed zeros as C99 Annex F says).
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pow_answers_as_c_pow() {
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert_eq!(super::pow(0.1, 0.0), 1.0);
        assert!((super::pow(0.1, 0.5) - 0.316_227_766_016_837_94).abs() < 1e-15);
        assert!(super::pow(-1.0, 0.5).is_nan());
        // What indicatif's estimator asks: 0.1^(age / 15 s).
        assert!((0.1f64.powf(1.5) - 0.031_622_776_601_683_79).abs() < 1e-15);
    }
}
