//! The stage-2 diffusion transformer: an MMDiT (Esser et al. 2024, "Scaling Rectified Flow
//! Transformers", SD3, section 4; FLUX's double-stream blocks) in the layout of Qwen-Image
//! (Qwen team 2025, "Qwen-Image Technical Report", section 2; diffusers
//! `QwenImageTransformer2DModel` in `transformer_qwenimage.py`), the DiT the paper conditions
//! on style embeddings (DESIGN.md, "Style-conditioned diffusion transformer").
//!
//! x (B, C, H, W) -> patches of p x p -> `img_in` + fixed 2D sin-cos positions = image tokens
//! (B, N, D); text (B, L, text_dim) -> `txt_norm` (RMSNorm) -> `txt_in` = text tokens (B, L, D);
//! t (B) -> sinusoid of 1000 t (256) -> Linear-SiLU-Linear = temb (B, D). Each of `depth`
//! double-stream blocks, per stream s in {img, txt}, with (shift1, scale1, gate1, shift2,
//! scale2, gate2) = s_mod(silu(temb)) and LN without affine parameters:
//!   a_s = LN(x_s) (1 + scale1) + shift1;  q, k, v per stream, RMSNorm of q and k per head;
//!   one attention over [text; image] tokens (text first), padded text keys masked;
//!   x_s += gate1 * out_s(attn_s);  x_s += gate2 * mlp_s(LN(x_s) (1 + scale2) + shift2)
//! with GELU-tanh MLPs of width mlp_ratio * D. Then `norm_out` (AdaLayerNormContinuous:
//! LN(x) (1 + scale) + shift, (scale, shift) = linear(silu(temb))) and `proj_out` on the image
//! tokens -> (B, N, C p p) -> unpatchify -> the velocity (B, C, H, W).
//!
//! Tensor names (diffusers'; every Linear has a bias; D = hidden, F = mlp_ratio D, d = D/heads,
//! P = C p p, N in 0..depth):
//!
//! | name                                                     | shape           |
//! |----------------------------------------------------------|-----------------|
//! | `img_in.{weight,bias}`                                   | (D, P), (D)     |
//! | `txt_norm.weight` (RMSNorm)                              | (text_dim)      |
//! | `txt_in.{weight,bias}`                                   | (D, text_dim)   |
//! | `time_text_embed.timestep_embedder.linear_1.*`           | (D, 256), (D)   |
//! | `time_text_embed.timestep_embedder.linear_2.*`           | (D, D), (D)     |
//! | `transformer_blocks.N.{img_mod,txt_mod}.1.*`             | (6D, D), (6D)   |
//! | `transformer_blocks.N.attn.{to_q,to_k,to_v,to_out.0}.*`  | (D, D), (D)     |
//! | `transformer_blocks.N.attn.{add_q_proj,add_k_proj,add_v_proj,to_add_out}.*` | (D, D), (D) |
//! | `transformer_blocks.N.attn.{norm_q,norm_k,norm_added_q,norm_added_k}.weight` | (d) |
//! | `transformer_blocks.N.{img_mlp,txt_mlp}.net.0.proj.*`    | (F, D), (F)     |
//! | `transformer_blocks.N.{img_mlp,txt_mlp}.net.2.*`         | (D, F), (D)     |
//! | `norm_out.linear.*` (scale, then shift)                  | (2D, D), (2D)   |
//! | `proj_out.*`                                             | (P, D), (P)     |
//!
//! The `to_*`/`norm_q`/`norm_k`/`img_*` tensors are the image stream's, the `add_*`/`*_added_*`/
//! `to_add_out`/`txt_*` ones the text stream's. The LayerNorms (`img_norm1/2`, `txt_norm1/2`,
//! `norm_out.norm`) have no parameters (`elementwise_affine=False`): `kernels::layer_norm`
//! with a constant gain of ones that is not a variable.
//!
//! Deliberate differences from Qwen-Image: positions are a fixed 2D sin-cos table added to the
//! image tokens (MAE/DiT `get_2d_sincos_pos_embed`) where Qwen-Image rotates q and k by MSRoPE
//! (3D rotary positions shared with the text tokens), so a checkpoint's weights load but do not
//! reproduce its outputs; the input is patchified here (Qwen-Image's pipeline packs the latents
//! before `img_in`, in the same (c, py, px) feature order); the last block skips its text
//! outputs, which Qwen-Image computes and discards (`init::unused_params`: same output, no
//! gradient); the text key padding is an explicit mask from `text_mask`. Every op is from
//! `kernels` or a plain candle op with a backward: gradients reach every other parameter.

mod config;
mod init;
#[cfg(test)]
mod tests;

pub use config::MmditConfig;
#[cfg_attr(not(test), allow(unused_imports))] // for the stage-2 loop
pub use init::{
    init_tensors, param_shapes, pos_embed_2d, timestep_embedding, unused_params, TIME_DIM,
};
use init::{StreamNames, IMG, TXT};

use candle_core::{bail, DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use kernels::AttentionOpts;

use super::layers::{Linear, RmsNorm};

/// A LayerNorm without affine parameters: x (…, D) -> (…, D).
#[derive(Debug, Clone)]
struct PlainNorm {
    /// (D) ones, a constant.
    ones: Tensor,
    eps: f64,
}

impl PlainNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::layer_norm(x, &self.ones, None, self.eps)
    }

    /// x: (B, T, D), shift, scale: (B, 1, D) -> LN(x) (1 + scale) + shift, (B, T, D).
    fn modulate(&self, x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
        self.forward(x)?
            .broadcast_mul(&scale.affine(1.0, 1.0)?)?
            .broadcast_add(shift)
    }
}

/// One stream of a double-stream block: its modulation, attention projections and MLP.
#[derive(Debug)]
struct Stream {
    modulation: Linear,
    q: Linear,
    k: Linear,
    v: Linear,
    norm_q: RmsNorm,
    norm_k: RmsNorm,
    out: Linear,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Stream {
    fn new(cfg: &MmditConfig, vb: &VarBuilder, n: &StreamNames) -> Result<Self> {
        let (c, f, d, eps) = (
            cfg.hidden_size,
            cfg.mlp_hidden(),
            cfg.head_dim(),
            cfg.norm_eps,
        );
        let mlp = vb.pp(n.mlp);
        Ok(Stream {
            modulation: Linear::new(vb.pp(n.modulation), c, 6 * c, true)?,
            q: Linear::new(vb.pp(n.q), c, c, true)?,
            k: Linear::new(vb.pp(n.k), c, c, true)?,
            v: Linear::new(vb.pp(n.v), c, c, true)?,
            norm_q: RmsNorm::new(vb.pp(n.norm_q), d, eps)?,
            norm_k: RmsNorm::new(vb.pp(n.norm_k), d, eps)?,
            out: Linear::new(vb.pp(n.out), c, c, true)?,
            fc1: Linear::new(mlp.pp("net.0.proj"), c, f, true)?,
            fc2: Linear::new(mlp.pp("net.2"), f, c, true)?,
            heads: cfg.num_heads,
        })
    }

    /// temb_act: (B, D), silu(temb) -> [shift1, scale1, gate1, shift2, scale2, gate2], each
    /// (B, 1, D).
    fn modulation(&self, temb_act: &Tensor) -> Result<Vec<Tensor>> {
        let m = self.modulation.forward(temb_act)?.unsqueeze(1)?; // (B, 1, 6D)
        m.chunk(6, 2)
    }

    /// x: (B, T, D) -> (B, T, H, d) by `lin`, RMS-normalised per head by `norm` when given.
    fn heads(&self, lin: &Linear, norm: Option<&RmsNorm>, x: &Tensor) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let y = lin
            .forward(x)?
            .reshape((b, t, self.heads, c / self.heads))?;
        match norm {
            Some(n) => n.forward(&y),
            None => Ok(y),
        }
    }

    /// x: (B, T, D), attn: (B, T, D) (heads merged), m: this stream's modulation -> x after
    /// the gated attention and MLP residuals, (B, T, D).
    fn residuals(&self, x: &Tensor, attn: &Tensor, m: &[Tensor], ln: &PlainNorm) -> Result<Tensor> {
        let x = (x + m[2].broadcast_mul(&self.out.forward(attn)?)?)?;
        let h = ln.modulate(&x, &m[3], &m[4])?;
        let h = self
            .fc2
            .forward(&kernels::gelu_tanh(&self.fc1.forward(&h)?)?)?;
        x + m[5].broadcast_mul(&h)?
    }
}

/// diffusers `QwenImageTransformerBlock`: image and text streams joined in one attention.
#[derive(Debug)]
struct Block {
    img: Stream,
    txt: Stream,
}

impl Block {
    /// img: (B, N, D), txt: (B, L, D), temb_act: (B, D) = silu(temb), mask: additive
    /// (B, 1, 1, L + N) or None -> (img (B, N, D), txt (B, L, D)); txt is None when `last`
    /// (its text outputs would be discarded, so they are not computed).
    fn forward(
        &self,
        img: &Tensor,
        txt: &Tensor,
        temb_act: &Tensor,
        mask: Option<&Tensor>,
        ln: &PlainNorm,
        last: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, n, c) = img.dims3()?;
        let l = txt.dim(1)?;
        let mi = self.img.modulation(temb_act)?;
        let mt = self.txt.modulation(temb_act)?;
        let ai = ln.modulate(img, &mi[0], &mi[1])?;
        let at = ln.modulate(txt, &mt[0], &mt[1])?;
        let (si, st) = (&self.img, &self.txt);
        let joint = |a: Tensor, b: Tensor| Tensor::cat(&[a, b], 1)?.transpose(1, 2); // (B, H, T, d)
        let k = joint(
            st.heads(&st.k, Some(&st.norm_k), &at)?,
            si.heads(&si.k, Some(&si.norm_k), &ai)?,
        )?;
        let v = joint(st.heads(&st.v, None, &at)?, si.heads(&si.v, None, &ai)?)?;
        let qi = si.heads(&si.q, Some(&si.norm_q), &ai)?;
        let q = if last {
            qi.transpose(1, 2)?
        } else {
            joint(st.heads(&st.q, Some(&st.norm_q), &at)?, qi)?
        };
        let tq = q.dim(2)?;
        let opts = AttentionOpts {
            mask,
            ..Default::default()
        };
        let o = kernels::attention(&q, &k, &v, &opts)?; // (B, H, Tq, d)
        let o = o.transpose(1, 2)?.reshape((b, tq, c))?;
        let img = si.residuals(img, &o.narrow(1, tq - n, n)?, &mi, ln)?;
        let txt = if last {
            None
        } else {
            Some(st.residuals(txt, &o.narrow(1, 0, l)?, &mt, ln)?)
        };
        Ok((img, txt))
    }
}

/// diffusers `QwenImageTransformer2DModel` over pixels or latents (see the module header).
#[derive(Debug)]
pub struct Mmdit {
    cfg: MmditConfig,
    img_in: Linear,
    txt_norm: RmsNorm,
    txt_in: Linear,
    time_1: Linear,
    time_2: Linear,
    blocks: Vec<Block>,
    norm_out: Linear,
    proj_out: Linear,
    ln: PlainNorm,
    /// (N, D) fixed 2D sin-cos positions of the image tokens, in the model's dtype.
    pos: Tensor,
    dtype: DType,
}

impl Mmdit {
    /// Loads (or, from a varmap, creates) every tensor under `vb`, named as a diffusers
    /// `QwenImageTransformer2DModel` checkpoint. Errors naming an invalid config or a missing
    /// or misshapen tensor.
    pub fn new(cfg: &MmditConfig, vb: VarBuilder) -> Result<Self> {
        cfg.check_resolved().map_err(candle_core::Error::wrap)?;
        let (c, eps) = (cfg.hidden_size, cfg.norm_eps);
        let (dtype, dev) = (vb.dtype(), vb.device().clone());
        let te = vb.pp("time_text_embed.timestep_embedder");
        let blocks = (0..cfg.depth)
            .map(|i| {
                let b = vb.pp(format!("transformer_blocks.{i}"));
                Ok(Block {
                    img: Stream::new(cfg, &b, &IMG)?,
                    txt: Stream::new(cfg, &b, &TXT)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let g = cfg.grid();
        let pos = Tensor::from_vec(pos_embed_2d(c, g), (g * g, c), &dev)?.to_dtype(dtype)?;
        Ok(Mmdit {
            cfg: cfg.clone(),
            img_in: Linear::new(vb.pp("img_in"), cfg.patch_dim(), c, true)?,
            txt_norm: RmsNorm::new(vb.pp("txt_norm"), cfg.text_dim, eps)?,
            txt_in: Linear::new(vb.pp("txt_in"), cfg.text_dim, c, true)?,
            time_1: Linear::new(te.pp("linear_1"), TIME_DIM, c, true)?,
            time_2: Linear::new(te.pp("linear_2"), c, c, true)?,
            blocks,
            norm_out: Linear::new(vb.pp("norm_out.linear"), c, 2 * c, true)?,
            proj_out: Linear::new(vb.pp("proj_out"), c, cfg.patch_dim(), true)?,
            ln: PlainNorm {
                ones: Tensor::ones(c, dtype, &dev)?,
                eps,
            },
            pos,
            dtype,
        })
    }

    pub fn config(&self) -> &MmditConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.pos.device()
    }

    /// The velocity. x: (B, C, S, S) with S = sample_size, t: (B) in [0, 1] (any float
    /// dtype), text: (B, L, text_dim), text_mask: (B, L), nonzero = keep, 0 = padding (any
    /// dtype) -> (B, C, S, S). x and text in the model's dtype. Errors naming the shapes.
    pub fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        text: &Tensor,
        text_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, ch, h, w) = x.dims4()?;
        let s = cfg.sample_size;
        if ch != cfg.in_channels || h != s || w != s {
            bail!(
                "MMDiT input is {:?}, expected (B, {}, {s}, {s})",
                x.dims(),
                cfg.in_channels
            );
        }
        if t.dims() != [b] {
            bail!(
                "MMDiT timesteps are {:?} for an input {:?}: expected ({b})",
                t.dims(),
                x.dims()
            );
        }
        let (tb, l, td) = text.dims3()?;
        if tb != b || td != cfg.text_dim {
            bail!(
                "MMDiT text is {:?} for an input {:?}: expected ({b}, L, {})",
                text.dims(),
                x.dims(),
                cfg.text_dim
            );
        }
        let mask = key_mask(text_mask, b, l, cfg.grid() * cfg.grid())?;
        let img = self.img_in.forward(&patchify(x, cfg.patch_size)?)?;
        let mut img = img.broadcast_add(&self.pos)?;
        let mut txt = self.txt_in.forward(&self.txt_norm.forward(text)?)?;
        let temb_act = kernels::silu(&self.time_embed(t)?)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let last = i + 1 == self.blocks.len();
            let (x, y) = block.forward(&img, &txt, &temb_act, mask.as_ref(), &self.ln, last)?;
            img = x;
            if let Some(y) = y {
                txt = y;
            }
        }
        let m = self
            .norm_out
            .forward(&temb_act)?
            .unsqueeze(1)?
            .chunk(2, 2)?; // scale, shift
        let out = self
            .proj_out
            .forward(&self.ln.modulate(&img, &m[1], &m[0])?)?;
        unpatchify(&out, ch, cfg.patch_size, h, w)
    }

    /// t: (B) -> temb (B, D): linear_2(silu(linear_1(sinusoid(t)))).
    fn time_embed(&self, t: &Tensor) -> Result<Tensor> {
        let e = timestep_embedding(t)?.to_dtype(self.dtype)?;
        self.time_2
            .forward(&kernels::silu(&self.time_1.forward(&e)?)?)
    }
}

/// The additive key mask of the joint attention: text_mask (B, L) (nonzero = keep, any dtype)
/// -> (B, 1, 1, L + N) f32, 0 for kept text keys and every image key, -inf for padding.
/// None when there is no mask.
fn key_mask(text_mask: Option<&Tensor>, b: usize, l: usize, n: usize) -> Result<Option<Tensor>> {
    let Some(m) = text_mask else {
        return Ok(None);
    };
    if m.dims() != [b, l] {
        bail!(
            "MMDiT text_mask is {:?}, expected ({b}, {l}) as the text",
            m.dims()
        );
    }
    let dev = m.device();
    let keep = m.to_dtype(DType::F32)?.ne(0f32)?;
    let hidden = Tensor::full(f32::NEG_INFINITY, (b, l), dev)?;
    let text = keep.where_cond(&hidden.zeros_like()?, &hidden)?;
    let image = Tensor::zeros((b, n), DType::F32, dev)?;
    Tensor::cat(&[text, image], 1)?
        .reshape((b, 1, 1, l + n))
        .map(Some)
}

/// x: (B, C, H, W) -> (B, (H/p)(W/p), C p p): tokens row-major over the grid of patches,
/// features in (c, py, px) order (Qwen-Image's `_pack_latents`). Errors unless p divides H, W.
pub fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if p == 0 || !h.is_multiple_of(p) || !w.is_multiple_of(p) {
        bail!("cannot cut {:?} into patches of {p}", x.dims());
    }
    let (gh, gw) = (h / p, w / p);
    x.reshape(vec![b, c, gh, p, gw, p])?
        .permute((0, 2, 4, 1, 3, 5))?
        .reshape((b, gh * gw, c * p * p))
}

/// The inverse of [`patchify`]: x (B, (H/p)(W/p), C p p) -> (B, C, H, W).
pub fn unpatchify(x: &Tensor, c: usize, p: usize, h: usize, w: usize) -> Result<Tensor> {
    let (b, n, f) = x.dims3()?;
    let (gh, gw) = (h / p.max(1), w / p.max(1));
    if p == 0 || gh * p != h || gw * p != w || n != gh * gw || f != c * p * p {
        bail!(
            "cannot fold {:?} into ({b}, {c}, {h}, {w}) by patches of {p}",
            x.dims()
        );
    }
    x.reshape(vec![b, gh, gw, c, p, p])?
        .permute((0, 3, 1, 4, 2, 5))?
        .reshape((b, c, h, w))
}
