//! What the model tests share: comparing outputs and the gradient rule of DESIGN.md ("every
//! trainable variable gets a finite, non-zero gradient").

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use candle_nn::VarMap;

/// max |a - b| over every element.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Every variable of `varmap` got a finite, non-zero gradient in `grads`, except those named
/// in `unused`, which must get none at all.
pub fn assert_every_var_gets_a_gradient(varmap: &VarMap, grads: &GradStore, unused: &[String]) {
    let data = varmap.data().lock().unwrap();
    for (name, var) in data.iter() {
        let g = grads.get(var);
        if unused.contains(name) {
            assert!(g.is_none(), "{name} is listed as unused but has a gradient");
            continue;
        }
        let g = g.unwrap_or_else(|| panic!("{name}: no gradient"));
        let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            g.iter().all(|v| v.is_finite()),
            "{name}: non-finite gradient"
        );
        assert!(g.iter().any(|v| *v != 0.0), "{name}: zero gradient");
    }
}
