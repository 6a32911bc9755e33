#include "evax/pretrain/masking.h"

#include <cmath>

namespace evax {

int64_t MaskingOptions::num_masked() const {
  return static_cast<int64_t>(std::llround(ratio_ * grid_ * grid_));
}

MaskingOptions masking_options_from_config(const ConfigView& v, MaskingOptions o) {
  o.grid(v.get<int64_t>("grid", o.grid(), "patch grid side of the student input (14 at 224 px)"));
  v.check("grid", o.grid() >= 2, "must be >= 2");
  o.ratio(v.get<double>("ratio", o.ratio(), "fraction of the patches masked (EVA-X: 0.3)"));
  v.check("ratio", o.ratio() > 0 && o.ratio() < 1, "must be in (0, 1)");
  const std::string kind =
      v.get<std::string>("kind", o.kind() == MaskKind::kBlock ? "block" : "uniform",
                         "BEiT block-wise masking (EVA-X's) or uniformly random patches");
  v.check("kind", kind == "block" || kind == "uniform", "must be block or uniform");
  o.kind(kind == "block" ? MaskKind::kBlock : MaskKind::kUniform);
  o.min_block(v.get<int64_t>("min_block", o.min_block(),
                             "smallest masked block in patches (BEiT's min_num_patches)"));
  v.check("min_block", o.min_block() >= 1, "must be >= 1");
  o.max_block(v.get<int64_t>("max_block", o.max_block(),
                             "largest masked block in patches (BEiT's max_num_patches)"));
  v.check("max_block", o.max_block() >= 0, "must be >= 0 (0 = the whole budget)");
  o.min_aspect(v.get<double>("min_aspect", o.min_aspect(),
                             "block aspect ratios are drawn log-uniformly from [min_aspect, "
                             "1/min_aspect]"));
  v.check("min_aspect", o.min_aspect() > 0 && o.min_aspect() <= 1, "must be in (0, 1]");
  v.check("min_block", o.kind() != MaskKind::kBlock || o.min_block() <= o.num_masked(),
          "is larger than the patch budget round(ratio · grid²) = " + std::to_string(o.num_masked()) +
              ": no block would fit (lower min_block or use kind: uniform)");
  return o;
}

int64_t mask_block_round(const MaskingOptions& o, Rng& rng, int64_t max_mask, uint8_t* mask) {
  const int64_t g = o.grid();
  const double log_lo = std::log(o.min_aspect()), log_hi = std::log(1.0 / o.min_aspect());
  int64_t delta = 0;
  for (int attempt = 0; attempt < 10 && delta == 0; ++attempt) {
    const double area = rng.uniform(static_cast<double>(o.min_block()), static_cast<double>(max_mask));
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    // Python's round() (ties to even), as BEiT.
    const int64_t h = static_cast<int64_t>(std::nearbyint(std::sqrt(area * aspect)));
    const int64_t w = static_cast<int64_t>(std::nearbyint(std::sqrt(area / aspect)));
    if (w >= g || h >= g) continue;
    const int64_t top = rng.uniform_int(0, g - h), left = rng.uniform_int(0, g - w);
    int64_t already = 0;
    for (int64_t i = top; i < top + h; ++i)
      for (int64_t j = left; j < left + w; ++j) already += mask[i * g + j];
    const int64_t fresh = h * w - already;
    if (fresh > 0 && fresh <= max_mask) {
      for (int64_t i = top; i < top + h; ++i)
        for (int64_t j = left; j < left + w; ++j)
          if (!mask[i * g + j]) mask[i * g + j] = 1, ++delta;
    }
  }
  return delta;
}

torch::Tensor mask_generate(const MaskingOptions& o, Rng& rng) {
  const int64_t g = o.grid(), n = o.num_masked();
  auto mask = torch::zeros({g, g}, torch::kUInt8);
  uint8_t* m = mask.data_ptr<uint8_t>();
  if (o.kind() == MaskKind::kUniform) {
    // Partial Fisher–Yates: the first n of a random permutation.
    std::vector<int64_t> idx(g * g);
    for (int64_t i = 0; i < g * g; ++i) idx[i] = i;
    for (int64_t i = 0; i < n; ++i) {
      std::swap(idx[i], idx[rng.uniform_int(i, g * g - 1)]);
      m[idx[i]] = 1;
    }
    return mask.to(torch::kBool);
  }
  const int64_t max_block = o.max_block() > 0 ? o.max_block() : n;
  int64_t count = 0;
  while (count < n) {
    const int64_t delta = mask_block_round(o, rng, std::min(n - count, max_block), m);
    if (delta == 0) break;
    count += delta;
  }
  return mask.to(torch::kBool);
}

}  // namespace evax
