// activation.wgsl (fragment, included by elementwise.wgsl and the GEMM kernels with `//#include activation`): the
// activations by code: 0 identity, 1 ReLU, 2 GELU with erf (BERT's "gelu"; erf by Abramowitz & Stegun 7.1.26,
// |error| < 1.5e-7), 3 GELU with tanh ("gelu_new"). `Activation::code` on the host.

fn erf_approx(z: f32) -> f32 {
    let a = abs(z);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(z) * (1.0 - poly * exp(-a * a));
}

fn activate(v: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return select(v, 0.0, v < 0.0); }
        case 2u: { return 0.5 * v * (1.0 + erf_approx(v * 0.70710678118654752)); }
        // tanh of a clamped argument: some drivers form tanh from exp and give NaN far out (tanh(15) is 1 in f32).
        case 3u: { return 0.5 * v * (1.0 + tanh(clamp(0.79788456080286536 * (v + 0.044715 * v * v * v), -15.0, 15.0))); }
        default: { return v; }
    }
}
