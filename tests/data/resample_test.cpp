// bicubic_pass against torch's interpolate(bicubic, antialias=True), which implements the same
// PIL filter: shrinking and enlarging, odd sizes, inputs narrower than the padded window, and
// strided crops read in place.
#include "evax/data/resample.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <vector>
#include <torch/torch.h>

namespace F = torch::nn::functional;

namespace {

torch::Tensor torch_aa(const torch::Tensor& chw, int64_t h, int64_t w) {
  return F::interpolate(chw.unsqueeze(0), F::InterpolateFuncOptions()
                                               .size(std::vector<int64_t>{h, w})
                                               .mode(torch::kBicubic)
                                               .align_corners(false)
                                               .antialias(true))
      .squeeze(0);
}

// PIL's ImagingResample coefficients and sum, written out plainly in double, along columns.
torch::Tensor pil_reference_columns(const torch::Tensor& chw, int64_t out) {
  const auto x = chw.to(torch::kDouble).contiguous();
  const int64_t C = x.size(0), H = x.size(1), in = x.size(2);
  auto y = torch::zeros({C, H, out}, torch::kDouble);
  auto xa = x.accessor<double, 3>();
  auto ya = y.accessor<double, 3>();
  const double scale = double(in) / double(out), fs = std::max(scale, 1.0), support = 2.0 * fs;
  auto cubic = [](double v) {
    const double a = -0.5;
    v = std::fabs(v);
    return v < 1 ? ((a + 2) * v - (a + 3)) * v * v + 1 : v < 2 ? (((v - 5) * v + 8) * v - 4) * a : 0.0;
  };
  for (int64_t i = 0; i < out; ++i) {
    const double center = (i + 0.5) * scale;
    int64_t xmin = static_cast<int64_t>(center - support + 0.5), xmax =
        static_cast<int64_t>(center + support + 0.5);
    xmin = std::max<int64_t>(xmin, 0);
    xmax = std::min(xmax, in);
    std::vector<double> k;
    double total = 0;
    for (int64_t j = xmin; j < xmax; ++j) {
      k.push_back(cubic((j - center + 0.5) / fs));
      total += k.back();
    }
    for (int64_t c = 0; c < C; ++c)
      for (int64_t r = 0; r < H; ++r) {
        double s = 0;
        for (int64_t j = xmin; j < xmax; ++j) s += xa[c][r][j] * k[j - xmin] / total;
        ya[c][r][i] = s;
      }
  }
  return y;
}

}  // namespace

TEST_CASE("bicubic_pass equals PIL's resampling formula and torch's antialiased bicubic") {
  torch::manual_seed(3);
  const std::vector<std::array<int64_t, 4>> cases = {
      {1024, 1024, 224, 224}, {740, 513, 224, 224}, {128, 128, 224, 224}, {300, 260, 224, 200},
      {7, 5, 3, 11},          {2, 3, 9, 1},         {1, 1, 4, 4},         {224, 224, 224, 100}};
  for (const auto& [h, w, oh, ow] : cases) {
    INFO(h << "x" << w << " -> " << oh << "x" << ow);
    const auto x = torch::rand({2, h, w});
    // Columns only and rows only, so each pass is compared on its own.
    const auto cols = evax::bicubic_pass(x, 2, ow);
    const auto rows = evax::bicubic_pass(x, 1, oh);
    CHECK(cols.sizes() == torch::IntArrayRef({2, h, ow}));
    CHECK(rows.sizes() == torch::IntArrayRef({2, oh, w}));
    // PIL's formula in double: float rounding only.
    CHECK((cols.to(torch::kDouble) - pil_reference_columns(x, ow)).abs().max().item<double>() <
          1e-6);
    CHECK((rows.to(torch::kDouble) - pil_reference_columns(x.transpose(1, 2), oh).transpose(1, 2))
              .abs()
              .max()
              .item<double>() < 1e-6);
    // torch places the windows and computes the weights in float32 (PIL and evax: double), which
    // moves values by up to ~1.7e-5 (0.004 of an 8-bit level).
    CHECK((cols - torch_aa(x, h, ow)).abs().max().item<double>() < 3e-5);
    CHECK((rows - torch_aa(x, oh, w)).abs().max().item<double>() < 3e-5);
  }
}

TEST_CASE("bicubic_pass reads a strided crop in place, like a contiguous copy") {
  torch::manual_seed(4);
  const auto img = torch::rand({1, 300, 400});
  const auto crop = img.slice(1, 17, 260).slice(2, 33, 390);
  REQUIRE_FALSE(crop.is_contiguous());
  for (int64_t dim : {1, 2}) {
    const auto a = evax::bicubic_pass(crop, dim, 97);
    const auto b = evax::bicubic_pass(crop.contiguous(), dim, 97);
    CHECK(torch::equal(a, b));
  }
  // A transposed view (last dimension not unit-stride) is copied first, with the same result.
  const auto t = img.transpose(1, 2);
  CHECK(torch::equal(evax::bicubic_pass(t, 2, 50), evax::bicubic_pass(t.contiguous(), 2, 50)));
}
