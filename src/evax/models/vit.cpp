#include "evax/models/vit.h"

#include <ATen/autocast_mode.h>

#include <atomic>
#include <cmath>

#include "evax/core/error.h"
#include "evax/core/log.h"
#include "evax/models/linear.h"

namespace F = torch::nn::functional;

namespace evax {

void trunc_normal_(torch::Tensor t, double std, double lo, double hi) {
  torch::NoGradGuard ng;
  // Inverse-CDF sampling, as torch.nn.init.trunc_normal_ does.
  auto cdf = [](double v) { return 0.5 * (1.0 + std::erf(v / std::sqrt(2.0))); };
  const double l = cdf(lo / std), u = cdf(hi / std);
  t.uniform_(2 * l - 1, 2 * u - 1).erfinv_().mul_(std * std::sqrt(2.0)).clamp_(lo, hi);
}

torch::Tensor resample_pos_embed(const torch::Tensor& pos, int64_t old_h, int64_t old_w,
                                 int64_t new_h, int64_t new_w, int64_t prefix) {
  EVAX_ASSERT(pos.dim() == 3 && pos.size(1) == prefix + old_h * old_w, "pos_embed ", pos.sizes());
  if (old_h == new_h && old_w == new_w) return pos;
  const int64_t d = pos.size(2);
  auto grid = pos.slice(1, prefix).to(torch::kFloat32).reshape({1, old_h, old_w, d}).permute({0, 3, 1, 2});
  grid = F::interpolate(grid, F::InterpolateFuncOptions()
                                  .size(std::vector<int64_t>{new_h, new_w})
                                  .mode(torch::kBicubic)
                                  .align_corners(false)
                                  .antialias(true));
  grid = grid.permute({0, 2, 3, 1}).reshape({1, new_h * new_w, d}).to(pos.scalar_type());
  return prefix > 0 ? torch::cat({pos.slice(1, 0, prefix), grid}, 1) : grid;
}

// --- PatchEmbed ----------------------------------------------------------------------------------

PatchEmbedImpl::PatchEmbedImpl(const ViTOptions& o) {
  proj = register_module(
      "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in_chans(), o.embed_dim(), o.patch_size())
                                    .stride(o.patch_size())
                                    .bias(true)));
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& x) { return proj->forward(x); }

// --- Attention -----------------------------------------------------------------------------------

namespace {

torch::nn::Linear linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

// The kernel choice (at::linear under autocast, oneDNN on the CPU in float32): models/linear.h.
torch::Tensor lin(const torch::nn::Linear& m, const torch::Tensor& x) {
  return linear_forward(x, m->weight, m->bias);
}
torch::Tensor lin(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return linear_forward(x, w, b);
}

torch::nn::LayerNorm layer_norm(int64_t d, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(eps));
}

// timm `rot`: (x0, x1, x2, x3, ...) → (-x1, x0, -x3, x2, ...).
torch::Tensor rotate_pairs(const torch::Tensor& x) {
  using torch::indexing::Slice;
  auto even = x.index({"...", Slice(0, torch::indexing::None, 2)});
  auto odd = x.index({"...", Slice(1, torch::indexing::None, 2)});
  return torch::stack({-odd, even}, -1).reshape(x.sizes());
}

// x (B, H, N, hd); table (N, 2·hd) = [sin | cos]. The product keeps fp32 tables, then casts back.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& table) {
  auto sc = table.chunk(2, -1);
  return (x * sc[1] + rotate_pairs(x) * sc[0]).to(x.scalar_type());
}

}  // namespace

AttentionImpl::AttentionImpl(const ViTOptions& o) : options(o) {
  const int64_t d = o.embed_dim();
  EVAX_ASSERT(d % o.num_heads() == 0, "embed_dim ", d, " not divisible by num_heads ", o.num_heads());
  if (o.qkv_fused()) {
    qkv = register_module("qkv", linear(d, 3 * d, !o.eva_qv_bias()));
    if (o.eva_qv_bias()) {
      q_bias = register_parameter("q_bias", torch::zeros({d}));
      v_bias = register_parameter("v_bias", torch::zeros({d}));
    }
  } else {
    // timm Eva with qkv_fused=False: q and v carry biases, k never does.
    q_proj = register_module("q_proj", linear(d, d, true));
    k_proj = register_module("k_proj", linear(d, d, false));
    v_proj = register_module("v_proj", linear(d, d, true));
  }
  proj = register_module("proj", linear(d, d, true));
}

namespace {

// Which fused kernel scaled_dot_product_attention runs (flash, cuDNN, memory-efficient or the
// unfused math fallback) decides much of a GPU step's speed: say it once per device type.
void log_attention_backend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  static std::atomic<bool> logged[2] = {false, false};
  const int slot = q.is_cuda() ? 1 : 0;
  if (logged[slot].exchange(true)) return;
  static const char* const names[] = {"math (unfused)", "flash attention", "memory-efficient attention",
                                      "cuDNN attention", "an overrideable backend"};
  // Under autocast the kernel sees q, k, v in the autocast dtype: ask with that dtype.
  const auto type = q.device().type();
  const bool cast = at::autocast::is_autocast_enabled(type);
  const auto dtype = cast ? at::autocast::get_autocast_dtype(type) : q.scalar_type();
  const int64_t c = at::_fused_sdp_choice(q.to(dtype), k.to(dtype), v.to(dtype));
  const std::string name = c >= 0 && c <= 4 ? names[c] : "no kernel (error)";
  log_info("attention: scaled_dot_product_attention runs ", name, " on ", q.device().str(), " (",
           c10::toString(dtype), ", head dim ", q.size(-1), ")");
}

}  // namespace

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& rope) {
  const int64_t b = x.size(0), n = x.size(1), d = x.size(2), h = options.num_heads();
  torch::Tensor q, k, v;
  if (qkv) {
    torch::Tensor bias = qkv->bias;
    if (q_bias.defined()) bias = torch::cat({q_bias, torch::zeros_like(q_bias), v_bias});
    auto t = lin(x, qkv->weight, bias).reshape({b, n, 3, h, d / h}).permute({2, 0, 3, 1, 4});
    auto parts = t.unbind(0);
    q = parts[0], k = parts[1], v = parts[2];
  } else {
    q = lin(q_proj, x).reshape({b, n, h, d / h}).transpose(1, 2);
    k = lin(k_proj, x).reshape({b, n, h, d / h}).transpose(1, 2);
    v = lin(v_proj, x).reshape({b, n, h, d / h}).transpose(1, 2);
  }
  if (rope.defined()) {
    // The cls token (index 0) is not rotated.
    q = torch::cat({q.slice(2, 0, 1), apply_rope(q.slice(2, 1), rope)}, 2).to(v.scalar_type());
    k = torch::cat({k.slice(2, 0, 1), apply_rope(k.slice(2, 1), rope)}, 2).to(v.scalar_type());
  }
  log_attention_backend(q, k, v);
  auto o = at::scaled_dot_product_attention(q, k, v);
  return lin(proj, o.transpose(1, 2).reshape({b, n, d}));
}

// --- Mlp -----------------------------------------------------------------------------------------

MlpImpl::MlpImpl(const ViTOptions& o) : kind(o.mlp()) {
  const int64_t d = o.embed_dim(), hidden = o.mlp_hidden();
  switch (kind) {
    case MlpKind::kGelu:
      fc1 = register_module("fc1", linear(d, hidden, true));
      fc2 = register_module("fc2", linear(hidden, d, true));
      break;
    case MlpKind::kSwiGluPacked:
      fc1 = register_module("fc1", linear(d, 2 * hidden, true));
      fc2 = register_module("fc2", linear(hidden, d, true));
      break;
    case MlpKind::kSwiGluSubLn:
      fc1_g = register_module("fc1_g", linear(d, hidden, true));
      fc1_x = register_module("fc1_x", linear(d, hidden, true));
      norm = register_module("norm", layer_norm(hidden, o.norm_eps()));
      fc2 = register_module("fc2", linear(hidden, d, true));
      break;
  }
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  switch (kind) {
    case MlpKind::kGelu:
      return lin(fc2, F::gelu(lin(fc1, x)));
    case MlpKind::kSwiGluPacked: {
      auto gv = lin(fc1, x).chunk(2, -1);  // rows [0:H] gate, [H:2H] value
      return lin(fc2, F::silu(gv[0]) * gv[1]);
    }
    case MlpKind::kSwiGluSubLn:
      return lin(fc2, norm->forward(F::silu(lin(fc1_g, x)) * lin(fc1_x, x)));
  }
  EVAX_ASSERT(false, "unknown MlpKind");
}

// --- Block ---------------------------------------------------------------------------------------

BlockImpl::BlockImpl(const ViTOptions& o, double dp) : drop_path(dp) {
  norm1 = register_module("norm1", layer_norm(o.embed_dim(), o.norm_eps()));
  attn = register_module("attn", Attention(o));
  norm2 = register_module("norm2", layer_norm(o.embed_dim(), o.norm_eps()));
  mlp = register_module("mlp", Mlp(o));
}

namespace {
// Per-sample stochastic depth with kept samples scaled by 1/keep (timm drop_path).
torch::Tensor drop_path_(const torch::Tensor& x, double p, bool training) {
  if (p <= 0.0 || !training) return x;
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  auto m = torch::empty(shape, x.options()).bernoulli_(keep);
  if (keep > 0) m.div_(keep);
  return x * m;
}
}  // namespace

// x + drop_path(branch(x)) with timm's mask (the same draw from the same generator), computed
// without waste: on the CPU the branch runs only on the kept samples (a dropped sample's residual
// branch would be multiplied by 0), on CUDA the mask is applied in one fused op (finding the kept
// rows there would synchronise the stream).
template <class Branch>
torch::Tensor residual(const torch::Tensor& x, double p, bool training, Branch&& branch) {
  if (p <= 0.0 || !training) return x + branch(x);
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  auto m = torch::empty(shape, x.options()).bernoulli_(keep);
  if (!(keep > 0)) return x + branch(x) * m;  // p = 1: every branch dropped, as timm computes it
  // timm scales the mask in the tensor's dtype: 1 / keep rounded there.
  const double scale =
      torch::scalar_tensor(1.0, torch::dtype(x.scalar_type())).div(keep).item<double>();
  if (x.is_cuda()) return torch::addcmul(x, branch(x), m.mul_(scale));
  const auto kept = m.reshape({-1}).nonzero().reshape({-1});
  const int64_t n = kept.size(0);
  if (n == x.size(0)) return torch::add(x, branch(x), scale);
  if (n == 0) return x.clone();
  // Under autocast the branch may come back in bf16 while the residual stream is float32.
  return x.index_add(0, kept, branch(x.index_select(0, kept)).to(x.scalar_type()), scale);
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& rope) {
  if (tap) return forward_tapped(x, rope);
  const bool tr = is_training();
  auto y = residual(x, drop_path, tr, [&](const torch::Tensor& t) {
    return attn->forward(norm1->forward(t), rope);
  });
  return residual(y, drop_path, tr,
                  [&](const torch::Tensor& t) { return mlp->forward(norm2->forward(t)); });
}

// The same computation with each tap point's tensor passed through `tap`.
torch::Tensor BlockImpl::forward_tapped(const torch::Tensor& x, const torch::Tensor& rope) {
  auto n1 = tap(BlockTapPoint::kNorm1, norm1->forward(x));
  auto y = x + drop_path_(attn->forward(n1, rope), drop_path, is_training());
  auto n2 = tap(BlockTapPoint::kNorm2, norm2->forward(y));
  return tap(BlockTapPoint::kOutput, y + drop_path_(mlp->forward(n2), drop_path, is_training()));
}

// --- VisionTransformer ---------------------------------------------------------------------------

VisionTransformerImpl::VisionTransformerImpl(ViTOptions o) : options_(std::move(o)) {
  const auto& op = options_;
  EVAX_ASSERT(op.img_size() % op.patch_size() == 0, "img_size ", op.img_size(), " patch ",
              op.patch_size());
  const int64_t d = op.embed_dim(), n = op.grid() * op.grid();
  patch_embed = register_module("patch_embed", PatchEmbed(op));
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, d}));
  pos_embed = register_parameter("pos_embed", torch::zeros({1, n + 1, d}));
  if (op.mim_dim() > 0) mask_token = register_parameter("mask_token", torch::zeros({1, 1, d}));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < op.depth(); ++i) {
    double dp = op.depth() > 1 ? op.drop_path_rate() * i / (op.depth() - 1) : op.drop_path_rate();
    blocks->push_back(Block(op, dp));
  }
  if (op.final_norm()) norm = register_module("norm", layer_norm(d, op.norm_eps()));
  if (op.pool() == PoolKind::kAvg && !op.final_norm())
    fc_norm = register_module("fc_norm", layer_norm(d, op.norm_eps()));
  if (op.num_classes() > 0) head = register_module("head", linear(d, op.num_classes(), true));
  if (op.mim_dim() > 0) lm_head = register_module("lm_head", linear(d, op.mim_dim(), true));
  init_weights();
}

void VisionTransformerImpl::init_weights() {
  torch::NoGradGuard ng;
  trunc_normal_(pos_embed, 0.02);
  trunc_normal_(cls_token, 0.02);
  if (mask_token.defined()) trunc_normal_(mask_token, 0.02);
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* lin = m->as<torch::nn::Linear>()) {
      trunc_normal_(lin->weight, 0.02);
      if (lin->bias.defined()) lin->bias.zero_();
    }
  }
  if (head) {
    head->weight.mul_(options_.head_init_scale());
    head->bias.mul_(options_.head_init_scale());
  }
}

torch::Tensor VisionTransformerImpl::rope_table(int64_t gh, int64_t gw,
                                                const torch::Device& device) const {
  const int64_t head_dim = options_.embed_dim() / options_.num_heads();
  const int64_t nb = head_dim / 4;
  auto fopt = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  // Same float32 operation order as timm (freq_bands, _build_grid with ref_feat_shape).
  auto ex = torch::arange(0, nb, 1, fopt.dtype(torch::kInt64)).to(torch::kFloat32) / nb;
  auto bands = 1.0 / torch::pow(10000.0, ex);
  const double ref = static_cast<double>(options_.rope_ref_grid());
  auto th = torch::arange(gh, fopt.dtype(torch::kInt64)).to(torch::kFloat32) / gh * ref;
  auto tw = torch::arange(gw, fopt.dtype(torch::kInt64)).to(torch::kFloat32) / gw * ref;
  auto mesh = torch::meshgrid({th, tw}, "ij");
  auto grid = torch::stack({mesh[0], mesh[1]}, -1).unsqueeze(-1);  // (gh, gw, 2, 1)
  auto pos = grid * bands;                                            // (gh, gw, 2, nb)
  auto sin = pos.sin().flatten(-2).flatten(0, -2).repeat_interleave(2, -1);
  auto cos = pos.cos().flatten(-2).flatten(0, -2).repeat_interleave(2, -1);
  return torch::cat({sin, cos}, -1);
}

torch::Tensor VisionTransformerImpl::pos_embed_for(int64_t gh, int64_t gw) const {
  const int64_t g = options_.grid();
  return resample_pos_embed(pos_embed, g, g, gh, gw, 1);
}

torch::Tensor VisionTransformerImpl::embed(const torch::Tensor& x, const torch::Tensor& mask,
                                           torch::Tensor* rope) {
  const int64_t p = options_.patch_size();
  if (x.dim() != 4 || x.size(1) != options_.in_chans() || x.size(2) % p || x.size(3) % p)
    raise<ConfigError>("model input must be (B, ", options_.in_chans(), ", H, W) with H and W ",
                       "multiples of ", p, ", got ", x.sizes());
  auto t = patch_embed->forward(x);  // (B, D, gh, gw)
  if (options_.stop_grad_conv1() && is_training()) t = t * 0.1 + t.detach() * 0.9;
  const int64_t b = t.size(0), gh = t.size(2), gw = t.size(3);
  t = t.flatten(2).transpose(1, 2);
  if (mask.defined()) {
    EVAX_ASSERT(mask_token.defined(), "forward_mim needs mim_dim > 0");
    EVAX_ASSERT(mask.dim() == 2 && mask.size(0) == b && mask.size(1) == gh * gw, "mask ",
                mask.sizes(), " for grid ", gh, "x", gw);
    auto w = mask.unsqueeze(-1).to(t.scalar_type());
    t = t * (1 - w) + mask_token * w;
  }
  t = torch::cat({cls_token.expand({b, -1, -1}), t}, 1) + pos_embed_for(gh, gw);
  *rope = options_.use_rope() ? rope_table(gh, gw, t.device()) : torch::Tensor();
  return t;
}

torch::Tensor VisionTransformerImpl::forward_features(const torch::Tensor& x) {
  torch::Tensor rope;
  auto t = embed(x, {}, &rope);
  for (auto& blk : *blocks) t = blk->as<BlockImpl>()->forward(t, rope);
  if (norm) t = norm->forward(t);
  return t;
}

std::vector<torch::Tensor> VisionTransformerImpl::forward_blocks(
    const torch::Tensor& x, const std::vector<int64_t>& indices) {
  const int64_t depth = static_cast<int64_t>(blocks->size());
  if (indices.empty()) raise<ConfigError>("forward_blocks: no block indices given");
  for (size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] < 0 || indices[i] >= depth || (i > 0 && indices[i] <= indices[i - 1]))
      raise<ConfigError>("block indices must be strictly increasing and in [0, ", depth - 1,
                         "] for a ", depth, "-block model, got ",
                         str_cat(c10::IntArrayRef(indices)));
  }
  torch::Tensor rope;
  auto t = embed(x, {}, &rope);
  std::vector<torch::Tensor> out;
  out.reserve(indices.size());
  size_t next = 0;
  for (int64_t i = 0; i <= indices.back(); ++i) {
    t = blocks[i]->as<BlockImpl>()->forward(t, rope);
    if (i == indices[next]) out.push_back(t), ++next;
  }
  return out;
}

torch::Tensor VisionTransformerImpl::forward_head(const torch::Tensor& tokens, bool pre_logits) {
  torch::Tensor x = options_.pool() == PoolKind::kAvg ? tokens.slice(1, 1).mean(1)
                                                      : tokens.select(1, 0);
  if (fc_norm) x = fc_norm->forward(x);
  if (pre_logits || !head) return x;
  return head->forward(x);
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& x) {
  return forward_head(forward_features(x));
}

torch::Tensor VisionTransformerImpl::forward_mim(const torch::Tensor& x, const torch::Tensor& mask) {
  EVAX_ASSERT(lm_head && norm, "forward_mim needs mim_dim > 0 and final_norm");
  torch::Tensor rope;
  auto t = embed(x, mask, &rope);
  for (auto& blk : *blocks) t = blk->as<BlockImpl>()->forward(t, rope);
  return lin(lm_head, norm->forward(t).slice(1, 1));
}

}  // namespace evax
