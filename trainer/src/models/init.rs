//! Helpers every model's seeded initialisation shares. Each tensor draws from its own stream,
//! `Rng::new(mix(seed, fnv1a(name)))`, so a tensor's values depend only on the seed and its
//! name, not on the order or the set of the other tensors (adding a layer does not reshuffle
//! the rest, and a run is a function of its seed on every machine).

use data::rng::{mix, Rng};

/// The random stream of the tensor called `name` under `seed`.
pub fn tensor_rng(seed: u64, name: &str) -> Rng {
    Rng::new(mix(seed, fnv1a(name)))
}

/// N(0, 1) conditioned on |x| <= 2, by rejection (accepts 95% of draws): HF-style normal
/// init without outliers.
pub fn truncated_normal(rng: &mut Rng) -> f32 {
    loop {
        let x = rng.normal();
        if x.abs() <= 2.0 {
            return x;
        }
    }
}

/// HF-style init of a tensor named `name` (f32, CPU): biases 0, gains of the norms that
/// `is_norm` picks 1, everything else `std` times a truncated normal from the tensor's own
/// stream (`PreTrainedModel._init_weights` of Qwen2 and Qwen2.5-VL).
pub fn hf_init(
    seed: u64,
    name: &str,
    shape: &[usize],
    std: f32,
    is_norm: impl Fn(&str) -> bool,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::{DType, Device, Tensor};
    let dev = Device::Cpu;
    if name.ends_with(".bias") {
        Tensor::zeros(shape, DType::F32, &dev)
    } else if is_norm(name) {
        Tensor::ones(shape, DType::F32, &dev)
    } else {
        let n = shape.iter().product();
        let mut rng = tensor_rng(seed, name);
        let v: Vec<f32> = (0..n).map(|_| std * truncated_normal(&mut rng)).collect();
        Tensor::from_vec(v, shape, &dev)
    }
}

/// 64-bit FNV-1a of a name: a stable stream label (std's hasher may change between releases).
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_depend_on_seed_and_name_only() {
        let a = tensor_rng(1, "w").next_u64();
        assert_eq!(a, tensor_rng(1, "w").next_u64());
        assert_ne!(a, tensor_rng(2, "w").next_u64());
        assert_ne!(a, tensor_rng(1, "v").next_u64());
        let mut r = tensor_rng(0, "x");
        assert!((0..1000).all(|_| truncated_normal(&mut r).abs() <= 2.0));
    }
}
