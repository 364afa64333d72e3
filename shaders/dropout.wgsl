// dropout.wgsl (fragment, included by encoder.wgsl and encoder_grad.wgsl with `//#include dropout`): the masks of
// backend/dropout.rs, drawn alike on every backend. Value `index` is kept when mix(mix(index) ^ key) ≥ threshold
// (threshold 0 keeps every value) and then scaled by `scale`; mix is the lowbias32 integer hash.

fn drop_mix(x0: u32) -> u32 {
    var x = x0;
    x = x ^ (x >> 16u);
    x = x * 0x7feb352du;
    x = x ^ (x >> 15u);
    x = x * 0x846ca68bu;
    x = x ^ (x >> 16u);
    return x;
}

// The factor of value `index`: `scale` when kept, else 0.
fn drop_factor(index: u32, key: u32, threshold: u32, scale: f32) -> f32 {
    return select(0.0, scale, drop_mix(drop_mix(index) ^ key) >= threshold);
}
