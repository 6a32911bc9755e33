// One MIM pretraining step against an independent PyTorch/timm reference (tools/mim_reference.py:
// timm Eva student with EVA-X settings + mask_token + nn.Linear lm_head, timm VisionTransformer
// teacher, MAE-style normalised pixels, torch.optim.AdamW with EVA-02's parameter groups).
//
// Both sides start from the same random weights (made by the script, shared through a safetensors
// file in the build tree) and see the same images and the same fixed mask. The C++ side runs the
// real code path: a PretrainTask (student/teacher construction, checkpoint loading, the
// trainable set), its forward_batch() (what forward_micro() does with a loader batch: mask tokens,
// student forward, final norm, lm_head, frozen-teacher or pixel targets, negative cosine at the
// masked patches), backward, and evax's AdamW (groups from no_weight_decay(), clip_grad_norm, step)
// in the order trainer_fit() calls them. Compared, max abs: the loss, every gradient and every
// updated student weight (lm_head and mask_token included), all within 1e-5, plus the
// weight-decay group of every parameter.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>

#include "evax/io/safetensors.h"
#include "evax/pretrain/task.h"
#include "evax/train/optim.h"
#include "python_reference.h"
#include "tensor_util.h"
#include "test_util.h"

using namespace evax;
namespace fs = std::filesystem;
using test::max_abs;

namespace {

constexpr double kTol = 1e-5;

// The reference file, made by the pinned venv once per build tree and again whenever the script (or
// the model code it shares) is newer than it (test::python_reference). No Python, no test: a
// missing interpreter fails rather than skips.
const TensorMap& reference() {
  static const TensorMap map = [] {
    const std::string python = EVAX_PYTHON;
    if (python.empty())
      FAIL("EVAX_PYTHON is not configured: the MIM reference needs the pinned venv (tools/dev.sh)");
    if (!fs::exists(python)) FAIL("EVAX_PYTHON " << python << " does not exist");
    return test::python_reference("mim_reference.py", "pretrain/mim_reference.safetensors");
  }();
  return map;
}

torch::Tensor ref_tensor(const std::string& name) {
  return test::reference_tensor(reference(), name);
}

void check_step(const std::string& kind) {
  torch::set_num_threads(2);
  test::TempDir tmp("mim_reference_" + kind);

  // A pretraining task as `evax pretrain` builds it, at 64 px with a 2-block EVA-X-Ti student. The
  // manifest row is never read: the batch is passed to forward_batch().
  std::ofstream(tmp / "manifest.csv") << "path,split,patient_id\nunused.png,train,p0\n";
  PretrainOptions o;
  o.model = "eva_x_tiny_patch16";
  o.depth = 2;
  o.target = kind;
  if (kind == "teacher") {
    // vit_tiny_patch16_224 at 64 px: the script's teacher layout (192 wide, 12 blocks).
    o.teacher = "vit_tiny_patch16_224";
    o.teacher_checkpoint = tmp / "teacher.safetensors";
    safetensors_save(o.teacher_checkpoint, test::with_prefix(reference(), "teacher_weights/"));
  }
  o.manifest = tmp / "manifest.csv";
  o.split = "all";
  o.views.student_size = 64;
  o.views.teacher_size = 64;
  o.masking.grid(4);
  o.loader.batch_size = 2;
  o.loader.workers = 0;
  o.device = "cpu";
  o.bf16 = false;
  PretrainTask task(o, 0, 1);

  // The shared initial weights (timm naming + mask_token, lm_head.*), every one of them.
  const TensorMap init = test::with_prefix(reference(), kind + "/init/");
  REQUIRE(!init.empty());
  task.load_model_state(init);

  const auto hp = ref_tensor("hp").to(torch::kFloat64);
  REQUIRE(hp.numel() == 6);
  AdamWOptions ao;
  ao.lr(hp[0].item<double>()).beta1(hp[1].item<double>()).beta2(hp[2].item<double>());
  ao.eps(hp[3].item<double>()).weight_decay(hp[4].item<double>()).clip_grad(hp[5].item<double>());
  AdamW opt(task.trainable(), ao);

  // Same parameters, same values, same weight-decay groups as the reference.
  std::set<std::string> names, ref_names;
  for (const auto& [k, v] : init) ref_names.insert(k);
  for (const auto& np : opt.params()) {
    names.insert(np.name);
    const auto* r = find(init, np.name);
    INFO(np.name);
    REQUIRE(r != nullptr);
    REQUIRE(max_abs(np.param.detach(), *r) == 0.0);
    const bool ref_no_decay = ref_tensor(kind + "/no_decay/" + np.name).item<int64_t>() != 0;
    CHECK(no_weight_decay(np.name, np.param) == ref_no_decay);
  }
  CHECK(names == ref_names);

  // The step, in trainer_fit()'s order (accum_steps 1, lr and wd at their peak values).
  const auto mask = ref_tensor("mask").to(torch::kBool);
  opt.zero_grad();
  MicroStep ms = task.forward_batch(ref_tensor("images"), ref_tensor("teacher_images"), mask);
  ms.loss.backward();
  std::map<std::string, torch::Tensor> grads;
  for (const auto& np : opt.params()) {
    INFO(np.name << " has no gradient");
    REQUIRE(np.param.grad().defined());
    grads[np.name] = np.param.grad().clone();
  }
  const double gnorm = opt.clip_grad_norm(ao.clip_grad());
  opt.step(ao.lr(), ao.weight_decay());

  CHECK(ms.samples == 2);
  CHECK(ms.logs.at("mask_ratio") == Approx(mask.to(torch::kFloat64).mean().item<double>()));
  const double loss = ms.loss.item<double>(), ref_loss = ref_tensor(kind + "/loss").item<double>();
  const double loss_err = std::abs(loss - ref_loss);
  const double ref_gnorm = ref_tensor(kind + "/grad_norm").item<double>();
  INFO(kind << ": loss " << loss << " (reference " << ref_loss << "), grad norm " << gnorm
            << " (reference " << ref_gnorm << ", clip " << ao.clip_grad() << ")");
  CHECK(loss_err <= kTol);
  CHECK(gnorm == Approx(ref_gnorm).epsilon(1e-5));
  REQUIRE(gnorm > ao.clip_grad());  // clipping is part of what is compared

  double worst_grad = 0, worst_weight = 0, largest_update = 0;
  std::string worst_grad_name, worst_weight_name;
  for (const auto& np : opt.params()) {
    const double eg = max_abs(grads[np.name], ref_tensor(kind + "/grad/" + np.name));
    const auto w = np.param.detach();
    const double ew = max_abs(w, ref_tensor(kind + "/updated/" + np.name));
    largest_update = std::max(largest_update, max_abs(w, *find(init, np.name)));
    INFO(np.name << ": gradient max abs diff " << eg << ", updated weight max abs diff " << ew);
    CHECK(eg <= kTol);
    CHECK(ew <= kTol);
    if (eg > worst_grad) worst_grad = eg, worst_grad_name = np.name;
    if (ew > worst_weight) worst_weight = ew, worst_weight_name = np.name;
  }
  // The step moved the weights by far more than the tolerance (else the comparison says nothing).
  CHECK(largest_update > 100 * kTol);
  std::cout << "MIM reference, " << kind << " target: loss " << loss << ", |diff| " << loss_err
            << "; max abs diff: gradients " << worst_grad << " (" << worst_grad_name
            << "), updated weights " << worst_weight << " (" << worst_weight_name
            << "); largest update " << largest_update << std::endl;
}

}  // namespace

TEST_CASE("one MIM step equals the PyTorch/timm reference: frozen teacher target") {
  check_step("teacher");
}

TEST_CASE("one MIM step equals the PyTorch/timm reference: normalised pixel target") {
  check_step("pixels");
}
