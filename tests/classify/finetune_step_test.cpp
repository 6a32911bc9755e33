// Two EVA-X finetuning steps against an independent PyTorch/timm reference
// (tools/finetune_reference.py: timm Eva as EVA-X's classifier, EVA-X's param_groups_lrd,
// torch.optim.AdamW, BCE-with-logits).
//
// Both sides start from the same random weights (made by the script, shared through a safetensors
// file in the build tree) and see the same two batches. The C++ side runs the real finetuning
// pieces: classifier_build (EVA-X-Ti layout, 3 blocks, 64 px, 5 classes, drop_path 0),
// load_weights (strict, timm naming), classifier_param_groups (layer decay + EVA-X's no-decay
// rule), multilabel_bce_loss (NaN-missing labels through sample_set_labels in the masked case),
// and evax's AdamW over those groups (set_lr, step). Compared, max abs: every parameter's lr scale
// and weight decay (exactly), the logits and the loss of each step, every gradient of step 1 and
// every weight after steps 1 and 2.
//
// Precision: Adam's first update lr·g/(|g| + 1e-8) amplifies the rounding of near-zero gradients,
// so PyTorch's own fp32 step is up to ~8e-5 away from its fp64 step. The exact comparisons run in
// fp64 (tolerance 1e-10, which also makes EVA-X's weight decay 0.05 visible in the weights: 0.06
// moves them by ~6e-6); the fp32 case holds logits, loss, gradients and the well-conditioned
// weights to 1e-5.
//
// Measured (x86, 2 threads): fp64 logits 4e-15, loss 7e-16, gradients 7e-16, weights 9.5e-14;
// fp32 logits 1.9e-6, loss 0, gradients 1.8e-7, weights 1.6e-7 where |g1| >= 1e-6 (1.4e-5 over
// all, 1201 of 1.49M elements excluded). About 0.1 s per case after the reference exists. Setting
// layer_decay to 0.65 instead of 0.55 on the C++ side fails the group check and the logits, loss
// and weight comparisons (tried by hand).
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "evax/classify/losses.h"
#include "evax/classify/model.h"
#include "evax/data/sample.h"
#include "evax/models/weights.h"
#include "evax/train/optim.h"
#include "python_reference.h"
#include "skip.h"
#include "tensor_util.h"

using namespace evax;
using test::max_abs;

namespace {

// fp32 (EVA-X's training precision) and fp64 tolerances, max abs.
constexpr double kTol = 1e-5;
constexpr double kTol64 = 1e-10;

const TensorMap& reference() {
  static const TensorMap map =
      test::python_reference("finetune_reference.py", "classify/finetune_reference.safetensors");
  return map;
}

torch::Tensor ref_tensor(const std::string& name) {
  return test::reference_tensor(reference(), name);
}

// Manifest-style labels (NaN = missing) → labels and label_mask as the data pipeline makes them.
std::pair<torch::Tensor, torch::Tensor> labels_and_mask(const torch::Tensor& nan_labels) {
  std::vector<torch::Tensor> ls, ms;
  for (int64_t i = 0; i < nan_labels.size(0); ++i) {
    auto row = nan_labels[i].contiguous();
    std::vector<float> v(row.data_ptr<float>(), row.data_ptr<float>() + row.numel());
    Sample s;
    sample_set_labels(s, v);
    ls.push_back(s.labels), ms.push_back(s.label_mask);
  }
  return {torch::stack(ls), torch::stack(ms)};
}

// Max abs diffs over a case, with the tensor that reached each.
struct Worst {
  double value = 0;
  std::string name;
  void add(double v, const std::string& n) {
    if (v > value) value = v, name = n;
  }
};

// fp32 only: Adam's update lr·g/(|g| + 1e-8) is ill-conditioned where |g| is within a few eps of
// zero (there PyTorch's own fp32 step is up to ~8e-5 away from its fp64 step), so fp32 weights are
// held to the tolerance where the reference's step-1 gradient is at least this large; there
// lr·eps/|g|²·δg stays below 1e-6 for the δg ~1e-7 measured, and at step 2 √v̂ ≥ 0.7·|g1| keeps
// it so. The other elements only have to stay within a few Adam step sizes.
constexpr double kConditionedGrad = 1e-6;

void check_case(const std::string& kind) {
  torch::set_num_threads(2);
  const auto t0 = std::chrono::steady_clock::now();
  const auto hp = ref_tensor(kind + "/hp").to(torch::kFloat64);
  REQUIRE(hp.numel() == 7);
  const double lr = hp[0].item<double>(), wd = hp[4].item<double>(), ld = hp[5].item<double>();
  const bool fp64 = hp[6].item<double>() == 64;
  const auto dtype = fp64 ? torch::kFloat64 : torch::kFloat32;
  const double tol = fp64 ? kTol64 : kTol;

  // The classifier with the reference's initial weights, every one of them, in the case's
  // precision (the fp32 weights cast exactly, as the script's model.to(dtype)).
  auto model = classifier_build(ClassifierOptions()
                                    .model("eva_x_tiny_patch16")
                                    .depth(3)
                                    .img_size(64)
                                    .num_classes(5)
                                    .drop_path(0));
  model->to(dtype);
  const TensorMap init = test::with_prefix(reference(), "init/");
  REQUIRE(!init.empty());
  const WeightLoadReport rep = load_weights(*model, init, WeightLoadOptions().strict(true));
  INFO(rep.summary());
  REQUIRE(rep.naming == WeightNaming::kTimm);
  REQUIRE(rep.loaded == init.size());
  model->train();  // drop_path 0: deterministic, as the reference's train mode

  // Same parameters, and each in the same (lr_scale, weight_decay) group as param_groups_lrd.
  AdamWOptions ao;
  ao.lr(lr).beta1(hp[1].item<double>()).beta2(hp[2].item<double>()).eps(hp[3].item<double>());
  ao.weight_decay(wd).clip_grad(0);  // EVA-X: no clipping
  AdamW opt(classifier_param_groups(*model, wd, ld), ao);
  const ParamGroups& groups = opt.groups();
  std::set<std::string> names, ref_names;
  for (const auto& [k, v] : init) ref_names.insert(k);
  int group_mismatches = 0;
  for (size_t i = 0; i < groups.params.size(); ++i) {
    const auto& np = groups.params[i];
    names.insert(np.name);
    INFO(kind << ": " << np.name);
    const auto* r = find(init, np.name);
    REQUIRE(r != nullptr);
    REQUIRE(np.param.scalar_type() == dtype);
    REQUIRE(max_abs(np.param.detach(), *r) == 0.0);
    const ParamGroupSpec& spec = groups.specs[groups.group[i]];
    const double ref_scale = ref_tensor(kind + "/lr_scale/" + np.name).item<double>();
    const double ref_wd = ref_tensor(kind + "/weight_decay/" + np.name).item<double>();
    if (spec.lr_scale != ref_scale || spec.weight_decay != ref_wd) {
      ++group_mismatches;
      CHECK(spec.lr_scale == ref_scale);
      CHECK(spec.weight_decay == ref_wd);
    }
  }
  CHECK(group_mismatches == 0);
  CHECK(names == ref_names);

  // Labels: all known, or NaN-missing through the data pipeline's conversion (masked).
  auto labels_of = [&](int s) -> std::pair<torch::Tensor, torch::Tensor> {
    if (kind == "masked") return labels_and_mask(ref_tensor("labels_nan" + std::to_string(s)));
    return {ref_tensor("targets" + std::to_string(s)), torch::Tensor()};
  };

  Worst logits_w, loss_w, grad_w, weight_w, weight_all_w;
  double smallest_update = 1e30;
  std::string smallest_update_name;
  int64_t ill_conditioned = 0, elements = 0;
  for (int s = 1; s <= 2; ++s) {
    const std::string step = kind + "/step" + std::to_string(s);
    const auto [labels, mask] = labels_of(s);
    if (kind == "masked") REQUIRE(mask.min().item<float>() == 0);  // something is missing
    opt.set_lr(lr);  // adjust_learning_rate at its constant (--fixed_lr) value
    for (size_t g = 0; g < groups.specs.size(); ++g)
      CHECK(opt.group_lr(g) == Approx(lr * groups.specs[g].lr_scale).epsilon(1e-15));
    opt.zero_grad();
    const auto logits = model->forward(ref_tensor("images" + std::to_string(s)).to(dtype));
    const auto loss = multilabel_bce_loss(logits, labels, mask);
    loss.backward();
    REQUIRE(loss.scalar_type() == dtype);

    const double ref_loss = ref_tensor(step + "/loss").item<double>();
    const double dlogits = max_abs(logits.detach(), ref_tensor(step + "/logits"));
    const double dloss = std::abs(loss.item<double>() - ref_loss);
    INFO(step << ": loss " << loss.item<double>() << " (reference " << ref_loss
              << "), logits max abs diff " << dlogits);
    CHECK(dlogits <= tol);
    CHECK(dloss <= tol);
    logits_w.add(dlogits, step), loss_w.add(dloss, step);
    if (kind == "masked") {
      // The mask matters: the loss over every entry (missing ones as 0) is far from the reference.
      const double unmasked = multilabel_bce_loss(logits.detach(), labels).item<double>();
      CHECK(std::abs(unmasked - ref_loss) > 100 * kTol);
    }
    if (s == 1) {
      for (const auto& np : opt.params()) {
        INFO(np.name << " has no gradient");
        REQUIRE(np.param.grad().defined());
        const double eg = max_abs(np.param.grad(), ref_tensor(step + "/grad/" + np.name));
        INFO(step << ": " << np.name << " gradient max abs diff " << eg);
        CHECK(eg <= tol);
        grad_w.add(eg, np.name);
      }
    }

    opt.step();
    for (size_t i = 0; i < groups.params.size(); ++i) {
      const auto& np = groups.params[i];
      const auto w = np.param.detach().to(torch::kFloat64);
      const auto diff = (w - ref_tensor(step + "/weights/" + np.name).to(torch::kFloat64)).abs();
      const double ew_all = diff.max().item<double>();
      double ew = ew_all;
      if (!fp64) {
        const auto g1 = ref_tensor(kind + "/step1/grad/" + np.name).abs();
        const auto ok = g1 >= kConditionedGrad;
        ew = ok.any().item<bool>() ? diff.masked_select(ok).max().item<double>() : 0.0;
        if (s == 2) ill_conditioned += (~ok).sum().item<int64_t>(), elements += ok.numel();
        // Ill-conditioned elements: within 3 Adam step sizes (|update| <= ~1.5 lr per step).
        const double lr_eff = lr * groups.specs[groups.group[i]].lr_scale;
        INFO(step << ": " << np.name << " weight max abs diff over all elements " << ew_all);
        CHECK(ew_all <= 3 * lr_eff * s);
        weight_all_w.add(ew_all, step + " " + np.name);
      }
      INFO(step << ": " << np.name << " weight max abs diff " << ew);
      CHECK(ew <= tol);
      weight_w.add(ew, step + " " + np.name);
      if (s == 2) {
        const double moved = max_abs(w, *find(init, np.name));
        if (moved < smallest_update) smallest_update = moved, smallest_update_name = np.name;
      }
    }
  }
  // Every tensor moved by far more than the tolerance (else its comparison would say little).
  INFO("smallest update " << smallest_update << " (" << smallest_update_name << ")");
  CHECK(smallest_update > 10 * kTol);

  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "finetune reference, " << kind << " (fp" << (fp64 ? 64 : 32) << ", weight_decay "
            << wd << ", layer_decay " << ld << "): max abs diff logits " << logits_w.value
            << ", loss " << loss_w.value << ", step-1 gradients " << grad_w.value << " ("
            << grad_w.name << "), weights " << weight_w.value << " (" << weight_w.name << ")";
  if (!fp64)
    std::cout << " where |g1| >= " << kConditionedGrad << ", all elements " << weight_all_w.value
              << " (" << weight_all_w.name << "; " << ill_conditioned << " of " << elements
              << " elements excluded)";
  std::cout << "; smallest update " << smallest_update << " (" << smallest_update_name << "); "
            << secs << " s" << std::endl;
}

}  // namespace

TEST_CASE("two finetuning steps equal timm Eva + torch AdamW: EVA-X settings", "[python]") {
  if (reference().empty()) EVAX_SKIP("EVAX_PYTHON not configured: no Python reference");
  check_case("evax");
}

TEST_CASE("two finetuning steps equal timm Eva + torch AdamW: masked labels, other decays",
          "[python]") {
  if (reference().empty()) EVAX_SKIP("EVAX_PYTHON not configured: no Python reference");
  check_case("masked");
}

TEST_CASE("two finetuning steps equal timm Eva + torch AdamW: EVA-X settings in fp32",
          "[python]") {
  if (reference().empty()) EVAX_SKIP("EVAX_PYTHON not configured: no Python reference");
  check_case("evax_fp32");
}
