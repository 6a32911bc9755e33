// Grad-CAM and Grad-CAM++ against the `grad-cam` package (pytorch-grad-cam 1.5.7) itself
// (tools/gradcam_reference.py: timm Eva as EVA-X-Ti with 3 blocks, 5 classes and random weights,
// EVA-X's reshape transform). Both sides get the same weights and inputs; compared: the maps (max abs 1e-4),
// the logits and the classes, at 224 x 224 and 160 x 224, for several classes per batch, the top
// class by default, both methods, the norm2 and block-output layers and two layers aggregated.
// Also: the block tap leaves the model as it was, and a wrong layer name is a ConfigError naming
// the valid ones.
//
// Measured (x86, 2 threads): maps max abs 2.2e-6 (Grad-CAM, all cases) and 1.5e-6 (Grad-CAM++),
// logits 6e-7; 0.2-2 s per case on a shared 2-core machine after the reference exists (the
// script takes ~25 s once). Resizing with align_corners true instead fails every case (~0.5).
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <set>

#include "evax/classify/model.h"
#include "evax/core/error.h"
#include "evax/explain/gradcam.h"
#include "evax/models/weights.h"
#include "python_reference.h"
#include "skip.h"
#include "tensor_util.h"

using namespace evax;
using Catch::Matchers::Contains;

namespace {

constexpr double kTol = 1e-4;

const TensorMap& reference() {
  static const TensorMap map =
      test::python_reference("gradcam_reference.py", "explain/gradcam_reference.safetensors");
  return map;
}

torch::Tensor reft(const std::string& name) { return test::reference_tensor(reference(), name); }

// The reference's classifier: EVA-X-Ti, 3 blocks, 5 classes, 224, its weights.
VisionTransformer reference_model() {
  torch::set_num_threads(2);
  auto m = classifier_build(
      ClassifierOptions().model("eva_x_tiny_patch16").depth(3).img_size(224).num_classes(5).drop_path(0));
  const TensorMap init = test::with_prefix(reference(), "init/");
  REQUIRE(!init.empty());
  const WeightLoadReport rep = load_weights(*m, init, WeightLoadOptions().strict(true));
  REQUIRE(rep.loaded == init.size());
  m->eval();
  return m;
}

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  auto c = t.to(torch::kInt64).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

struct Case {
  const char* name;
  const char* method;
  std::vector<std::string> layers;
  bool top;  // no classes given: the top class of each image
};

}  // namespace

TEST_CASE("Grad-CAM maps equal the grad-cam package's algorithm (sizes, classes, methods, layers)") {
  if (std::string(EVAX_PYTHON).empty()) EVAX_SKIP("no EVAX_PYTHON: the reference needs timm");
  auto model = reference_model();
  const std::vector<Case> cases = {
      {"g224", "gradcam", {}, false},
      {"top224", "gradcam", {}, true},
      {"g160x224", "gradcam", {"blocks.2.norm1"}, false},
      {"pp224", "gradcam++", {}, false},
      {"pp160x224", "gradcam++", {"blocks.-1.norm1"}, false},
      {"norm2", "gradcam", {"blocks.1.norm2"}, false},
      {"block", "gradcam", {"blocks.1"}, false},
      {"multi", "gradcam", {"blocks.0.norm1", "blocks.2.norm1"}, false},
  };
  for (const Case& c : cases) {
    INFO("case " << c.name);
    const std::string k = c.name;
    const auto x = reft(k + "/x");
    const auto classes = to_vector(reft(k + "/classes"));
    const auto t0 = std::chrono::steady_clock::now();
    const GradCamResult r = grad_cam(*model, x, c.top ? std::vector<int64_t>{} : classes,
                                     GradCamOptions().method(c.method).layers(c.layers));
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    REQUIRE(r.maps.sizes() == reft(k + "/cam").sizes());
    CHECK(to_vector(r.classes) == classes);
    const double dmap = test::max_abs(r.maps, reft(k + "/cam"));
    const double dlog = test::max_abs(r.logits, reft(k + "/logits"));
    std::cout << "gradcam " << k << ": maps max abs " << dmap << ", logits " << dlog << ", "
              << secs << " s\n";
    CHECK(dmap <= kTol);
    CHECK(dlog <= kTol);
    // Maps are scaled to [0, 1] per image.
    CHECK(r.maps.min().item<double>() >= 0);
    CHECK(r.maps.max().item<double>() <= 1);
  }
  // The top-class case is a real test: its images' top classes differ.
  const auto top = to_vector(reft("top224/classes"));
  CHECK(std::set<int64_t>(top.begin(), top.end()).size() > 1);
  CHECK(top == to_vector(reft("top224/logits").argmax(1)));
}

TEST_CASE("Grad-CAM: one class for every image, batch independence, the model left untouched") {
  if (std::string(EVAX_PYTHON).empty()) EVAX_SKIP("no EVAX_PYTHON: the reference needs timm");
  auto model = reference_model();
  const auto x = reft("g224/x");
  torch::Tensor before;
  {
    torch::NoGradGuard ng;
    before = model->forward(x);
  }
  const GradCamResult all = grad_cam(*model, x, {3});
  CHECK(to_vector(all.classes) == std::vector<int64_t>{3, 3, 3, 3});
  // Each image alone gives the same map as in the batch.
  for (int64_t i = 0; i < x.size(0); ++i) {
    const GradCamResult one = grad_cam(*model, x.slice(0, i, i + 1), {3});
    CHECK(test::max_abs(one.maps[0], all.maps[i]) <= 1e-5);
  }
  // No tap left behind, no parameter gradient, eval mode kept, the same logits.
  for (const auto& b : *model->blocks) CHECK(!b->as<BlockImpl>()->tap);
  for (const auto& p : model->parameters()) CHECK(!p.grad().defined());
  CHECK(!model->is_training());
  torch::NoGradGuard ng;
  CHECK(torch::equal(model->forward(x), before));
  // A model in training mode runs in eval mode for the call and is put back.
  model->train();
  (void)grad_cam(*model, x.slice(0, 0, 1), {});
  CHECK(model->is_training());
}

TEST_CASE("Grad-CAM: a wrong target layer is a ConfigError naming the valid ones") {
  auto model = classifier_build(
      ClassifierOptions().model("eva_x_tiny_patch16").depth(2).img_size(32).num_classes(3).drop_path(0));
  const auto x = torch::randn({1, 3, 32, 32});
  for (const char* bad : {"blocks.2.norm1", "blocks.-3", "blocks.0.attn", "norm", "head",
                          "blocks.x.norm1", "blocks.0.norm1.weight"}) {
    INFO(bad);
    CHECK_THROWS_AS(grad_cam(*model, x, {}, GradCamOptions().layers({bad})), ConfigError);
    CHECK_THROWS_WITH(grad_cam(*model, x, {}, GradCamOptions().layers({bad})),
                      Contains(std::string("'") + bad + "'") && Contains("blocks.<i>.norm1") &&
                          Contains("blocks.<i>.norm2") && Contains("[0, 1]"));
  }
  CHECK(cam_layer("blocks.-1.norm2", 2).block == 1);
  CHECK(cam_layer("blocks.0", 2).point == BlockTapPoint::kOutput);
  CHECK_THROWS_WITH(grad_cam(*model, x, {}, GradCamOptions().method("scorecam")),
                    Contains("scorecam") && Contains("gradcam++"));
  CHECK_THROWS_WITH(grad_cam(*model, x, {3}), Contains("class index 3") && Contains("3 classes"));
  CHECK_THROWS_AS(grad_cam(*model, torch::randn({1, 3, 40, 32}), {}), ConfigError);
}

TEST_CASE("cam_scale is the package's scale_cam_image") {
  auto m = torch::tensor({{0.5f, 1.5f}, {2.5f, 4.5f}}).reshape({1, 2, 2});
  auto s = cam_scale(m);
  // (x - 0.5) / (1e-7 + 4)
  CHECK(s[0][1][1].item<float>() == Approx(4.0 / (4.0 + 1e-7)).epsilon(1e-7));
  CHECK(s[0][0][0].item<float>() == 0.0f);
  // A constant map becomes zeros (0 / 1e-7).
  CHECK(torch::equal(cam_scale(torch::full({2, 3, 3}, 0.25f)), torch::zeros({2, 3, 3})));
}
