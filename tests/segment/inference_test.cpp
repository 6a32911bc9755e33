// Segmentation inference against an independent plain-torch rendering of mmseg 0.29's whole /
// slide inference (tools/seg_inference_reference.py) on a fixed random stride-4 conv net, plus
// hand-built cases for the window layout, thresholding and argmax.
#include "evax/segment/inference.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "python_reference.h"
#include "skip.h"
#include "tensor_util.h"

using evax::SegInferenceOptions;
using evax::test::max_abs;

namespace {

constexpr double kTol = 1e-5;  // fp32 convolutions and resizes, same kernels on both sides

const evax::TensorMap& reference() {
  static const evax::TensorMap map = evax::test::python_reference(
      "seg_inference_reference.py", "segment/seg_inference_reference.safetensors");
  return map;
}

torch::Tensor ref_t(const std::string& name) {
  return evax::test::reference_tensor(reference(), name);
}

// The reference net with `c` output channels: conv(relu(conv(x, s2, p1)), s2, p1), stride 4.
evax::SegForward reference_net(int c) {
  const auto w1 = ref_t("w1"), b1 = ref_t("b1");
  const auto w2 = ref_t("c" + std::to_string(c) + "/w2"),
             b2 = ref_t("c" + std::to_string(c) + "/b2");
  return [=](const torch::Tensor& x) {
    auto h = torch::relu(torch::conv2d(x, w1, b1, 2, 1));
    return torch::conv2d(h, w2, b2, 2, 1);
  };
}

// A (B, C, h, w) constant-logit forward: every pixel gets `values` (C of them).
evax::SegForward constant_logits(std::vector<float> values) {
  return [values](const torch::Tensor& x) {
    const auto c = static_cast<int64_t>(values.size());
    return torch::tensor(values).view({1, c, 1, 1}).expand({x.size(0), c, 5, 3}).contiguous();
  };
}

}  // namespace

TEST_CASE("seg inference: whole and slide equal the torch reference",
          "[segment][inference][python]") {
  if (std::string(EVAX_PYTHON).empty())
    EVAX_SKIP("EVAX_PYTHON is not configured (torch reference)");
  torch::NoGradGuard ng;
  const auto x = ref_t("x");
  const auto p = ref_t("params").to(torch::kInt64);
  const auto param = [&](int i) { return p[i].item<int64_t>(); };
  const int64_t crop_h = param(0), crop_w = param(1), stride_h = param(2), stride_w = param(3);
  const int64_t h0 = param(6), w0 = param(7), h1 = param(8), w1 = param(9);
  const auto square = SegInferenceOptions().mode("slide").crop_size(param(4)).stride(param(5));
  double worst = 0;
  for (int c : {1, 3}) {
    INFO("channels " << c);
    const std::string k = "c" + std::to_string(c) + "/";
    const auto net = reference_net(c);
    const auto whole = evax::seg_whole_logits(net, x);
    const auto rect = evax::seg_slide_logits(net, x, crop_h, crop_w, stride_h, stride_w);
    const auto sq = evax::seg_inference_logits(net, x, square);
    const auto whole_ori = evax::seg_resize_logits(whole, h0, w0);
    const std::vector<std::pair<std::string, std::pair<torch::Tensor, torch::Tensor>>> pairs = {
        {"whole", {whole, ref_t(k + "whole")}},
        {"whole (options)",
         {evax::seg_inference_logits(net, x, SegInferenceOptions()), ref_t(k + "whole")}},
        {"slide_rect", {rect, ref_t(k + "slide_rect")}},
        {"slide_sq", {sq, ref_t(k + "slide_sq")}},
        {"whole_ori", {whole_ori, ref_t(k + "whole_ori")}},
        {"slide_ori", {evax::seg_resize_logits(sq, h0, w0), ref_t(k + "slide_ori")}},
        {"whole_small", {evax::seg_resize_logits(whole, h1, w1), ref_t(k + "whole_small")}},
        {"probs", {evax::seg_logits_to_probs(whole_ori), ref_t(k + "probs")}},
    };
    for (const auto& [name, t] : pairs) {
      INFO(name);
      const double d = max_abs(t.first, t.second);
      worst = std::max(worst, d);
      CHECK(d <= kTol);
    }
    // Slide and whole differ on this net (windows see different borders): the test can tell.
    CHECK(max_abs(rect, whole) > 1e-3);

    // Classes: equal wherever the decision is not within kTol of the threshold / a tie.
    const auto ours = evax::seg_logits_to_classes(whole_ori, 0.3);
    const auto expect = ref_t(k + "classes");
    REQUIRE(ours.sizes() == expect.sizes());
    REQUIRE(ours.scalar_type() == torch::kUInt8);
    torch::Tensor close;
    const auto probs = ref_t(k + "probs");
    if (c == 1) {
      close = (probs.squeeze(1) - 0.3).abs() < kTol;
    } else {
      const auto top2 = std::get<0>(probs.topk(2, 1));
      close = (top2.select(1, 0) - top2.select(1, 1)).abs() < kTol;
    }
    const auto differ = (ours != expect) & close.logical_not();
    CHECK(differ.sum().item<int64_t>() == 0);
    CHECK(expect.to(torch::kFloat32).mean().item<double>() > 0);  // not all background
    CHECK(expect.ne(0).logical_not().any().item<bool>());         // nor all foreground

    const auto r = evax::seg_infer(net, x, h0, w0, square, /*with_probs=*/true);
    CHECK(r.classes.sizes() == torch::IntArrayRef({x.size(0), h0, w0}));
    CHECK(r.probs.sizes() == torch::IntArrayRef({x.size(0), c, h0, w0}));
    CHECK(max_abs(r.probs, evax::seg_logits_to_probs(ref_t(k + "slide_ori"))) <= kTol);
    CHECK_FALSE(evax::seg_infer(net, x, h0, w0, square).probs.defined());
  }
  WARN("seg inference: max |evax - torch reference| = " << worst);
}

TEST_CASE("seg inference: slide windows follow mmseg's layout", "[segment][inference]") {
  torch::NoGradGuard ng;
  const auto x = torch::rand({2, 3, 45, 70});
  // H 45, crop 32, stride 20: h_grids = max(45 - 32 + 19, 0) / 20 + 1 = 2; rows [0, 32), then
  // y2 = min(20 + 32, 45) = 45, y1 = 45 - 32 = 13. W 70, crop 40, stride 17: w_grids =
  // (70 - 40 + 16) / 17 + 1 = 3; cols [0, 40), [17, 57), then x2 = min(34 + 40, 70), x1 = 30.
  const std::vector<std::pair<int64_t, int64_t>> rows = {{0, 32}, {13, 45}};
  const std::vector<std::pair<int64_t, int64_t>> cols = {{0, 40}, {17, 57}, {30, 70}};
  std::vector<torch::Tensor> seen;
  const evax::SegForward record = [&](const torch::Tensor& in) {
    seen.push_back(in.clone());
    return in.narrow(1, 0, 2);  // logits = the first two input channels, at stride 1
  };
  const auto out = evax::seg_slide_logits(record, x, 32, 40, 20, 17);
  REQUIRE(seen.size() == rows.size() * cols.size());
  size_t k = 0;
  for (const auto& [y1, y2] : rows)
    for (const auto& [x1, x2] : cols) {
      INFO("window " << k);
      CHECK(torch::equal(seen[k++], x.slice(2, y1, y2).slice(3, x1, x2)));
    }
  // Identity logits averaged over overlapping windows are the input again.
  CHECK(max_abs(out, x.narrow(1, 0, 2)) <= 1e-6);

  // A window covering the image (or larger) is exactly whole inference.
  const auto net = [](const torch::Tensor& in) {
    return torch::avg_pool2d(in, 4, 4, 0, /*ceil_mode=*/true).narrow(1, 0, 1) * 3.0 - 1.0;
  };
  const auto whole = evax::seg_whole_logits(net, x);
  CHECK(torch::equal(evax::seg_slide_logits(net, x, 45, 70, 10, 10), whole));
  CHECK(torch::equal(evax::seg_slide_logits(net, x, 64, 100, 7, 5), whole));
  CHECK(torch::equal(
      evax::seg_inference_logits(net, x, SegInferenceOptions().mode("slide").crop_size(80)),
      whole));
  // Smaller windows differ (this net's outputs depend on where a window starts).
  CHECK_FALSE(torch::allclose(evax::seg_slide_logits(net, x, 32, 32, 16, 16), whole));
}

TEST_CASE("seg inference: threshold and argmax", "[segment][inference]") {
  const auto x = torch::zeros({2, 3, 10, 6});
  // One channel: sigmoid(l) > threshold, strictly. sigmoid(-0.8) = 0.310, sigmoid(-0.9) = 0.289.
  const auto cls = [&](float logit, double thr) {
    const auto o = SegInferenceOptions().threshold(thr);
    const auto r = evax::seg_infer(constant_logits({logit}), x, 7, 9, o);
    REQUIRE(r.classes.sizes() == torch::IntArrayRef({2, 7, 9}));
    REQUIRE(r.classes.scalar_type() == torch::kUInt8);
    const int64_t v = r.classes[0][0][0].item<int64_t>();
    REQUIRE(torch::all(r.classes == v).item<bool>());  // constant logits stay constant
    return v;
  };
  CHECK(cls(-0.8f, 0.3) == 1);
  CHECK(cls(-0.9f, 0.3) == 0);
  CHECK(cls(0.0f, 0.5) == 0);  // sigmoid(0) = 0.5 is not > 0.5
  CHECK(cls(0.01f, 0.5) == 1);
  CHECK(cls(-0.8f, 0.5) == 0);
  CHECK(SegInferenceOptions().threshold() == 0.3);
  CHECK(SegInferenceOptions().mode() == "whole");

  // Several channels: argmax, the first of equal maxima; the threshold does not matter.
  auto l = torch::zeros({1, 3, 2, 2});
  l[0][0][0][0] = 2, l[0][1][0][0] = 1;  // class 0
  l[0][2][0][1] = 0.5;                   // class 2
  l[0][1][1][0] = 1, l[0][2][1][0] = 1;  // tie 1 / 2 → 1
  // (1, 1): all equal → 0
  const auto ids = evax::seg_logits_to_classes(l, 0.9);
  CHECK(ids.scalar_type() == torch::kUInt8);
  CHECK(torch::equal(ids, torch::tensor({0, 2, 1, 0}, torch::kUInt8).view({1, 2, 2})));
  const auto pr = evax::seg_logits_to_probs(l);
  CHECK(max_abs(pr.sum(1), torch::ones({1, 2, 2})) <= 1e-6);
  CHECK(max_abs(evax::seg_logits_to_probs(torch::zeros({1, 1, 2, 2})),
                torch::full({1, 1, 2, 2}, 0.5)) == 0);
}

TEST_CASE("seg inference: bad input is a typed error", "[segment][inference]") {
  const auto x = torch::zeros({1, 3, 16, 16});
  const auto net = constant_logits({0.0f});
  CHECK_THROWS_AS(evax::seg_inference_logits(net, x, SegInferenceOptions().mode("sliding")),
                  evax::ConfigError);
  CHECK_THROWS_AS(evax::seg_slide_logits(net, x, 0, 8, 4, 4), evax::ConfigError);
  CHECK_THROWS_AS(evax::seg_slide_logits(net, x, 8, 8, 4, 0), evax::ConfigError);
  CHECK_THROWS_AS(evax::seg_whole_logits(net, torch::zeros({3, 16, 16})), evax::DataError);
  CHECK_THROWS_AS(evax::seg_resize_logits(torch::zeros({1, 1, 4, 4}), 0, 5), evax::DataError);
  const evax::SegForward bad = [](const torch::Tensor&) { return torch::zeros({2, 1, 4, 4}); };
  CHECK_THROWS_AS(evax::seg_whole_logits(bad, x), evax::InternalError);
}
