//! Shared primitive: elementary functions in straight-line arithmetic (no libm call, no branch), so that a
//! loop applying them vectorizes: LLVM turns each line into one SIMD instruction.

/// eˣ for f32, to about 1 ulp (the Cephes `expf` scheme): `x = n·ln 2 + r` with
/// `n = round(x / ln 2)` and `|r| ≤ ln 2 / 2`, so `eˣ = 2ⁿ · eʳ`; `eʳ ≈ 1 + r + r²·p(r)` with
/// a degree-5 minimax `p`, and `2ⁿ` is built in the exponent bits, as two factors so that
/// results past the normal range come out as IEEE does: ∞ above about 88.72, subnormals and
/// then 0 below about −87.3 (`x` is clamped to `[−104, 89]`, beyond which nothing changes;
/// NaN stays NaN).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two, so that n·LN2_HI is exact and r keeps its low bits
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1];
    let x = x.clamp(-104.0, 89.0);
    let n = (x * LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = P[0];
    for &coefficient in &P[1..] {
        p = p.mul_add(r, coefficient);
    }
    let e_r = (p * r).mul_add(r, r) + 1.0;
    // n in [−151, 129] as an integer, read from the bits of n + 1.5·2²³ (exact there): a
    // float-to-int `as` cast saturates and maps NaN to 0 lane by lane, which does not
    // vectorize. (A NaN x gives a garbage n here, which the NaN e_r swallows.)
    let n = ((n + 12_582_912.0).to_bits() as i32).wrapping_sub(0x4B40_0000);
    // 2ⁿ = 2^(n/2) · 2^(n − n/2), each factor a normal float
    let half = n >> 1;
    let power_of_two = |k: i32| f32::from_bits((k.wrapping_add(127) as u32) << 23);
    e_r * power_of_two(half) * power_of_two(n.wrapping_sub(half))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_two_ulp_of_the_exact_value_over_its_range() {
        let mut worst = 0.0f64;
        let steps = 2_000_000;
        for i in 0..=steps {
            let x = -87.0 + 175.7 * i as f64 / steps as f64;
            let x = x as f32;
            let exact = (x as f64).exp();
            let ulp = (exact as f32).next_up() as f64 - exact as f32 as f64;
            worst = worst.max((exp_f32(x) as f64 - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
    }

    #[test]
    fn exp_f32_overflows_and_underflows_like_ieee_and_keeps_nan() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert_eq!(exp_f32(1000.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        // the subnormal range, to within an ulp of its coarse spacing
        for x in [-88.0f32, -95.0, -100.0, -103.0] {
            let exact = (x as f64).exp();
            assert!((exp_f32(x) as f64 - exact).abs() <= 1.5e-45 + 4e-7 * exact, "{x}: {} vs {exact}", exp_f32(x));
        }
    }
}
