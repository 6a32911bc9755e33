#include "evax/explain/gradcam.h"

#include <algorithm>
#include <cstdlib>

#include "evax/core/error.h"
#include "evax/core/strings.h"

namespace F = torch::nn::functional;

namespace evax {

namespace {

std::string valid_layers(int64_t depth) {
  return str_cat("blocks.<i>.norm1, blocks.<i>.norm2 or blocks.<i> with i in [0, ", depth - 1,
                 "] (or [-", depth, ", -1] from the end)");
}

// Parses a (possibly negative) decimal integer; false when `s` is not one.
bool parse_index(const std::string& s, int64_t* v) {
  if (s.empty() || s.size() > 18) return false;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t k = i; k < s.size(); ++k)
    if (s[k] < '0' || s[k] > '9') return false;
  *v = std::strtoll(s.c_str(), nullptr, 10);
  return true;
}

// Leaves every tapped block untapped, whatever way the scope ends.
struct TapReset {
  std::vector<BlockImpl*> blocks;
  ~TapReset() {
    for (auto* b : blocks) b->tap = nullptr;
  }
};

// Restores the model's training flag.
struct ModeRestore {
  VisionTransformerImpl& m;
  bool was_training;
  ~ModeRestore() { m.train(was_training); }
};

// (B, 1 + gh·gw, D) tokens → (B, D, gh, gw): EVA-X's reshape_transform (cls dropped).
torch::Tensor tokens_to_grid(const torch::Tensor& t, int64_t gh, int64_t gw) {
  EVAX_ASSERT(t.dim() == 3 && t.size(1) == 1 + gh * gw, "tokens ", t.sizes(), " for grid ", gh,
              "x", gw);
  return t.slice(1, 1).reshape({t.size(0), gh, gw, t.size(2)}).permute({0, 3, 1, 2});
}

}  // namespace

CamLayer cam_layer(const std::string& name, int64_t depth) {
  const auto parts = split_on(name, '.');
  int64_t i = 0;
  CamLayer l;
  l.name = name;
  const bool ok = (parts.size() == 2 || parts.size() == 3) && parts[0] == "blocks" &&
                  parse_index(parts[1], &i) && i >= -depth && i < depth &&
                  (parts.size() == 2 || parts[2] == "norm1" || parts[2] == "norm2");
  if (!ok)
    raise<ConfigError>("Grad-CAM target layer '", name, "' is not a layer of this ", depth,
                       "-block model; valid: ", valid_layers(depth));
  l.block = i < 0 ? depth + i : i;
  l.point = parts.size() == 2 ? BlockTapPoint::kOutput
            : parts[2] == "norm1" ? BlockTapPoint::kNorm1
                                  : BlockTapPoint::kNorm2;
  return l;
}

torch::Tensor cam_scale(const torch::Tensor& maps) {
  auto flat = maps.flatten(1);
  auto shifted = flat - std::get<0>(flat.min(1, /*keepdim=*/true));
  auto scaled = shifted / (std::get<0>(shifted.max(1, /*keepdim=*/true)) + 1e-7);
  return scaled.reshape(maps.sizes());
}

GradCamResult grad_cam(VisionTransformerImpl& model, const torch::Tensor& pixels,
                       const std::vector<int64_t>& classes, const GradCamOptions& o) {
  const bool plus = o.method() == "gradcam++";
  if (!plus && o.method() != "gradcam")
    raise<ConfigError>("Grad-CAM method '", o.method(), "' is unknown; valid: gradcam, gradcam++");
  if (!model.head)
    raise<ConfigError>("Grad-CAM needs a classifier with a head (the model has none)");
  const int64_t depth = static_cast<int64_t>(model.blocks->size());
  std::vector<CamLayer> layers;
  if (o.layers().empty()) layers.push_back(cam_layer("blocks." + std::to_string(depth - 1) + ".norm1", depth));
  for (const auto& n : o.layers()) layers.push_back(cam_layer(n, depth));
  const int64_t p = model.options().patch_size();
  if (pixels.dim() != 4 || pixels.size(2) % p || pixels.size(3) % p || pixels.size(2) == 0 ||
      pixels.size(3) == 0)
    raise<ConfigError>("Grad-CAM input must be (B, 3, H, W) with H and W positive multiples of ",
                       p, ", got ", pixels.sizes());
  const int64_t b = pixels.size(0), h = pixels.size(2), w = pixels.size(3);
  const int64_t gh = h / p, gw = w / p;

  // The earliest target in forward order is handed on detached and requiring grad: the
  // gradients need nothing before it, and every later target depends on it.
  auto order = [](const CamLayer& l) { return l.block * 3 + static_cast<int64_t>(l.point); };
  size_t first = 0;
  for (size_t j = 1; j < layers.size(); ++j)
    if (order(layers[j]) < order(layers[first])) first = j;
  std::vector<torch::Tensor> acts(layers.size());
  TapReset reset;
  for (int64_t blk = 0; blk < depth; ++blk) {
    std::vector<size_t> here;
    for (size_t j = 0; j < layers.size(); ++j)
      if (layers[j].block == blk) here.push_back(j);
    if (here.empty()) continue;
    auto* block = model.blocks[blk]->as<BlockImpl>();
    block->tap = [&layers, &acts, first, here](BlockTapPoint pt, const torch::Tensor& t) {
      torch::Tensor out = t;
      for (size_t j : here) {
        if (layers[j].point != pt) continue;
        if (j == first && !acts[j].defined()) out = t.detach().requires_grad_(true);
        acts[j] = out;
      }
      return out;
    };
    reset.blocks.push_back(block);
  }

  ModeRestore mode{model, model.is_training()};
  model.eval();
  torch::AutoGradMode grad_on(true);
  torch::Tensor logits = model.forward(pixels);
  const int64_t k = logits.size(1);
  torch::Tensor cls;
  if (classes.empty()) {
    cls = logits.detach().argmax(1);
  } else {
    if (classes.size() != 1 && static_cast<int64_t>(classes.size()) != b)
      raise<ConfigError>("Grad-CAM: ", classes.size(), " classes given for ", b,
                         " images (want none, one, or one per image)");
    for (int64_t c : classes)
      if (c < 0 || c >= k)
        raise<ConfigError>("Grad-CAM class index ", c, " is out of range for ", k, " classes");
    std::vector<int64_t> all = classes;
    if (all.size() == 1) all.assign(static_cast<size_t>(b), classes[0]);
    cls = torch::tensor(all, torch::kInt64).to(logits.device());
  }
  // ClassifierOutputTarget per image, summed over the batch: the raw logits of the classes.
  auto loss = logits.gather(1, cls.unsqueeze(1)).sum();
  for (size_t j = 0; j < layers.size(); ++j)
    EVAX_ASSERT(acts[j].defined(), "Grad-CAM layer ", layers[j].name, " was not reached");
  auto grads = torch::autograd::grad({loss}, acts, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                     /*create_graph=*/false, /*allow_unused=*/false);

  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> per_layer;
  for (size_t j = 0; j < layers.size(); ++j) {
    // Under bf16 autocast the activations and gradients may be bf16; the map is float32 math.
    auto a = tokens_to_grid(acts[j].detach().to(torch::kFloat32), gh, gw);
    auto g = tokens_to_grid(grads[j].to(torch::kFloat32), gh, gw);
    torch::Tensor weights;
    if (!plus) {
      weights = g.mean({2, 3});
    } else {
      // GradCAMPlusPlus.get_cam_weights (eq. 19 of arXiv:1710.11063).
      auto g2 = g * g;
      auto g3 = g2 * g;
      auto sum_a = a.sum({2, 3}).unsqueeze(-1).unsqueeze(-1);
      auto aij = g2 / (2 * g2 + sum_a * g3 + 0.000001);
      aij = torch::where(g != 0, aij, torch::zeros_like(aij));
      weights = (g.clamp_min(0) * aij).sum({2, 3});
    }
    auto cam = (weights.unsqueeze(-1).unsqueeze(-1) * a).sum(1).clamp_min(0);  // (B, gh, gw)
    cam = cam_scale(cam);
    cam = F::interpolate(cam.unsqueeze(1), F::InterpolateFuncOptions()
                                               .size(std::vector<int64_t>{h, w})
                                               .mode(torch::kBilinear)
                                               .align_corners(false));
    per_layer.push_back(cam);  // (B, 1, H, W)
  }
  auto maps = torch::cat(per_layer, 1).clamp_min(0).mean(1);
  GradCamResult r;
  r.maps = cam_scale(maps).to(torch::kFloat32);
  r.logits = logits.detach().to(torch::kFloat32);
  r.classes = cls;
  return r;
}

}  // namespace evax
