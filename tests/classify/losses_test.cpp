#include "evax/classify/losses.h"

#include <catch2/catch.hpp>
#include <functional>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "evax/data/sample.h"
#include "reference_util.h"
#include "skip.h"

using evax::test::loss_ref;

namespace {

struct LossGrad {
  torch::Tensor loss, grad;
};

LossGrad run(const torch::Tensor& x, const std::function<torch::Tensor(const torch::Tensor&)>& f) {
  auto z = x.clone().set_requires_grad(true);
  auto l = f(z);
  l.backward();
  return {l.detach().reshape({1}), z.grad()};
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

// Compares with the reference `prefix`/loss and `prefix`/grad within 1e-6, printing the diffs.
void check(const LossGrad& r, const std::string& prefix) {
  const double dl = max_diff(r.loss, loss_ref(prefix + "/loss"));
  const double dg = max_diff(r.grad, loss_ref(prefix + "/grad"));
  INFO(prefix << ": |Δloss| " << dl << ", max |Δgrad| " << dg);
  WARN(prefix << ": |Δloss| " << dl << ", max |Δgrad| " << dg);
  CHECK(dl <= 1e-6);
  CHECK(dg <= 1e-6);
}

// Manifest-style labels (NaN = missing) → labels and label_mask as the data pipeline makes them.
std::pair<torch::Tensor, torch::Tensor> labels_and_mask(const torch::Tensor& nan_labels) {
  std::vector<torch::Tensor> ls, ms;
  for (int64_t i = 0; i < nan_labels.size(0); ++i) {
    auto row = nan_labels[i].contiguous();
    std::vector<float> v(row.data_ptr<float>(), row.data_ptr<float>() + row.numel());
    evax::Sample s;
    evax::sample_set_labels(s, v);
    ls.push_back(s.labels), ms.push_back(s.label_mask);
  }
  return {torch::stack(ls), torch::stack(ms)};
}

}  // namespace

TEST_CASE("losses: masked BCE equals timm and torch", "[losses][python]") {
  if (evax::test::classify_reference().empty()) EVAX_SKIP("EVAX_PYTHON not configured");
  const auto x = loss_ref("bce/logits");
  const auto [y, m] = labels_and_mask(loss_ref("bce/labels_nan"));
  REQUIRE(m.min().item<float>() == 0);  // the inputs do have missing labels
  for (auto [name, s] : {std::pair<std::string, double>{"s0", 0.0}, {"s01", 0.1}}) {
    const auto o = evax::BceLossOptions().smoothing(s);
    const auto masked = run(x, [&](const torch::Tensor& z) {
      return evax::multilabel_bce_loss(z, y, m, o);
    });
    check(masked, "bce/" + name + "/masked");
    CHECK(masked.grad.masked_select(m == 0).abs().max().item<float>() == 0);
    // All known (the hidden labels revealed): plain timm BCE without a mask.
    const auto y_true = loss_ref("bce/labels_full");
    check(run(x, [&](const torch::Tensor& z) { return evax::multilabel_bce_loss(z, y_true, {}, o); }),
          "bce/" + name + "/full");
  }
  const auto y_full = loss_ref("bce/labels_full");
  check(run(x, [&](const torch::Tensor& z) {
          return evax::multilabel_bce_loss(z, y_full, torch::ones_like(y_full));
        }),
        "bce/torch");
}

TEST_CASE("losses: BCE ignores missing targets and survives an all-missing batch", "[losses]") {
  auto x = torch::randn({4, 5});
  auto y = torch::rand({4, 5}).round();
  auto m = torch::ones({4, 5});
  m.index_put_({0, 1}, 0);
  auto y2 = y.clone();
  y2.index_put_({0, 1}, std::nanf(""));
  CHECK(evax::multilabel_bce_loss(x, y, m).item<float>() ==
        evax::multilabel_bce_loss(x, y2, m).item<float>());
  const auto none = run(x, [&](const torch::Tensor& z) {
    return evax::multilabel_bce_loss(z, y, torch::zeros_like(m));
  });
  CHECK(none.loss.item<float>() == 0);
  CHECK(none.grad.abs().max().item<float>() == 0);
  CHECK_THROWS_AS(evax::multilabel_bce_loss(x, y, m, evax::BceLossOptions().smoothing(1.0)),
                  evax::ConfigError);
}

TEST_CASE("losses: cross-entropy and soft targets equal torch and timm", "[losses][python]") {
  if (evax::test::classify_reference().empty()) EVAX_SKIP("EVAX_PYTHON not configured");
  const auto x = loss_ref("ce/logits");
  const auto t = loss_ref("ce/target");
  check(run(x, [&](const torch::Tensor& z) { return evax::cross_entropy_loss(z, t); }), "ce/s0");
  const auto o = evax::CrossEntropyLossOptions().smoothing(0.1);
  const auto s = run(x, [&](const torch::Tensor& z) { return evax::cross_entropy_loss(z, t, o); });
  check(s, "ce/s01");
  check(s, "ce/torch_s01");
  check(run(x, [&](const torch::Tensor& z) {
          return evax::soft_target_cross_entropy(z, loss_ref("soft/target"));
        }),
        "soft");
}

TEST_CASE("losses: one-hot labels to class indices", "[losses]") {
  auto l = torch::tensor({0.f, 1.f, 0.f, 1.f, 0.f, 0.f, 0.f, 0.f, 1.f}).view({3, 3});
  CHECK(torch::equal(evax::one_hot_to_index(l), torch::tensor({1, 0, 2}, torch::kLong)));
  auto bad = l.clone();
  bad.index_put_({0, 0}, 1);
  CHECK_THROWS_AS(evax::one_hot_to_index(bad), evax::DataError);
  auto m = torch::ones({3, 3});
  m.index_put_({2, 2}, 0);
  CHECK_THROWS_AS(evax::one_hot_to_index(l, m), evax::DataError);
}
