#include "evax/data/resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "evax/core/error.h"

namespace evax {
namespace {

double bicubic(double x) {
  constexpr double a = -0.5;  // PIL's (and torch's antialiased) bicubic constant
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Output sample i reads in[start[i] .. start[i] + taps) with weights w[i * taps ...]. Windows are
// padded with zero weights to a common length (a multiple of 4 when the input allows) and
// shifted left where they would run past the end.
struct Taps {
  int64_t taps = 0;
  std::vector<int64_t> start;
  std::vector<float> w;
};

Taps pil_taps(int64_t in, int64_t out, int64_t multiple) {
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale, ss = 1.0 / filterscale;
  std::vector<int64_t> lo(static_cast<size_t>(out)), n(static_cast<size_t>(out));
  int64_t widest = 0;
  for (int64_t i = 0; i < out; ++i) {
    const double center = (static_cast<double>(i) + 0.5) * scale;
    // PIL truncates toward zero before clamping.
    const int64_t xmin = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t xmax = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in);
    lo[static_cast<size_t>(i)] = xmin;
    n[static_cast<size_t>(i)] = std::max<int64_t>(xmax - xmin, 0);
    widest = std::max(widest, n[static_cast<size_t>(i)]);
  }
  Taps t;
  t.taps = std::min(in, (widest + multiple - 1) / multiple * multiple);
  t.start.resize(static_cast<size_t>(out));
  t.w.assign(static_cast<size_t>(out * t.taps), 0.0f);
  std::vector<double> k;
  for (int64_t i = 0; i < out; ++i) {
    const double center = (static_cast<double>(i) + 0.5) * scale;
    const int64_t xmin = lo[static_cast<size_t>(i)], cnt = n[static_cast<size_t>(i)];
    k.assign(static_cast<size_t>(cnt), 0.0);
    double total = 0;
    for (int64_t x = 0; x < cnt; ++x) {
      k[static_cast<size_t>(x)] = bicubic((static_cast<double>(x + xmin) - center + 0.5) * ss);
      total += k[static_cast<size_t>(x)];
    }
    const int64_t s = std::min(xmin, in - t.taps);  // keep the padded window inside the input
    t.start[static_cast<size_t>(i)] = s;
    for (int64_t x = 0; x < cnt; ++x)
      t.w[static_cast<size_t>(i * t.taps + xmin - s + x)] =
          static_cast<float>(total != 0.0 ? k[static_cast<size_t>(x)] / total : 0.0);
  }
  return t;
}

typedef float v4f __attribute__((vector_size(16)));

// Along columns: each output value is a dot product of a contiguous input run and its weights.
void pass_columns(const float* in, int64_t rows, int64_t row_stride, float* out, int64_t out_w,
                  const Taps& t) {
  const bool vec = t.taps % 4 == 0;
  for (int64_t y = 0; y < rows; ++y) {
    const float* row = in + y * row_stride;
    float* dst = out + y * out_w;
    for (int64_t x = 0; x < out_w; ++x) {
      const float* src = row + t.start[static_cast<size_t>(x)];
      const float* w = t.w.data() + x * t.taps;
      float sum;
      if (vec) {
        v4f acc = {0, 0, 0, 0};
        for (int64_t k = 0; k < t.taps; k += 4) {
          v4f a, b;
          std::memcpy(&a, src + k, sizeof a);
          std::memcpy(&b, w + k, sizeof b);
          acc += a * b;
        }
        sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
      } else {
        sum = 0;
        for (int64_t k = 0; k < t.taps; ++k) sum += src[k] * w[k];
      }
      dst[x] = sum;
    }
  }
}

// Along rows: each output row is a weighted sum of whole input rows (vectorised over x).
void pass_rows(const float* in, int64_t row_stride, int64_t width, float* out, int64_t out_h,
               const Taps& t) {
  for (int64_t y = 0; y < out_h; ++y) {
    float* __restrict dst = out + y * width;
    const float* w = t.w.data() + y * t.taps;
    const float* base = in + t.start[static_cast<size_t>(y)] * row_stride;
    std::fill(dst, dst + width, 0.0f);
    for (int64_t k = 0; k < t.taps; ++k) {
      const float wk = w[k];
      if (wk == 0.0f) continue;
      const float* __restrict src = base + k * row_stride;
      for (int64_t x = 0; x < width; ++x) dst[x] += wk * src[x];
    }
  }
}

}  // namespace

torch::Tensor bicubic_pass(const torch::Tensor& chw, int64_t dim, int64_t out) {
  EVAX_ASSERT(chw.dim() == 3 && chw.scalar_type() == torch::kFloat32 && out > 0 &&
                  (dim == 1 || dim == 2),
              "bicubic_pass wants a float (C, H, W) tensor, dim 1 or 2 and out > 0");
  torch::Tensor x = chw.stride(2) == 1 ? chw : chw.contiguous();
  const int64_t C = x.size(0), H = x.size(1), W = x.size(2);
  const int64_t in = dim == 1 ? H : W;
  EVAX_ASSERT(in > 0, "bicubic_pass: empty input");
  const Taps t = pil_taps(in, out, dim == 2 ? 4 : 1);
  torch::Tensor y = torch::empty(dim == 1 ? std::vector<int64_t>{C, out, W}
                                          : std::vector<int64_t>{C, H, out},
                                 torch::kFloat32);
  const float* src = x.data_ptr<float>();
  float* dst = y.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const float* plane = src + c * x.stride(0);
    if (dim == 2) pass_columns(plane, H, x.stride(1), dst + c * H * out, out, t);
    else pass_rows(plane, x.stride(1), W, dst + c * out * W, out, t);
  }
  return y;
}

}  // namespace evax
