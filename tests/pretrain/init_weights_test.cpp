// The pretraining task loads its teacher and its student initialisation strictly: a checkpoint
// that fits only in part is refused with the file named and the offending keys counted and
// listed; only the documented drops pass (the teacher's classifier head and MGCA's non-image
// parts; the student's mask_token / lm_head). Small models at 32 px, no images are read.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <fstream>

#include "evax/core/error.h"
#include "evax/io/safetensors.h"
#include "evax/models/registry.h"
#include "evax/models/weights.h"
#include "evax/pretrain/task.h"
#include "test_util.h"

using namespace evax;
using Catch::Matchers::Contains;

namespace {

// Options of a tiny CPU task; the manifest rows are never read (construction reads no image).
PretrainOptions tiny_options(const test::TempDir& tmp) {
  const std::string manifest = tmp / "m.csv";
  std::ofstream(manifest) << "path,split,patient_id\na.png,train,p1\nb.png,train,p2\n";
  PretrainOptions o;
  o.model = "eva_x_tiny_patch16";
  o.depth = 2;
  o.manifest = manifest;
  o.views.student_size = 32;
  o.views.teacher_size = 32;
  o.masking = MaskingOptions().grid(2).kind(MaskKind::kUniform).ratio(0.5);
  o.loader.batch_size = 2;
  o.loader.workers = 0;
  o.device = "cpu";
  o.bf16 = false;
  o.target = "pixels";
  return o;
}

// A vit_tiny teacher with a 10-class head, as a timm-named file would hold it.
TensorMap teacher_weights() {
  torch::manual_seed(5);
  auto m = model_create("vit_tiny_patch16_224", 10, 32);
  TensorMap sd;
  for (const auto& kv : state_dict_timm(*m)) sd.emplace_back(kv.first, kv.second.detach().clone());
  return sd;
}

TensorMap without(const TensorMap& sd, const std::string& prefix) {
  TensorMap out;
  for (const auto& kv : sd)
    if (kv.first.rfind(prefix, 0) != 0) out.push_back(kv);
  return out;
}

std::string error_of(const PretrainOptions& o) {
  try {
    PretrainTask task(o, 0, 1);
  } catch (const DataError& e) {
    return e.what();
  }
  FAIL("the task was built without an error");
  return "";
}

TensorMap student_state(PretrainTask& t) {
  TensorMap sd;
  for (const auto& kv : state_dict_timm(*t.student())) sd.emplace_back(kv.first, kv.second.detach());
  return sd;
}

}  // namespace

TEST_CASE("the teacher loads strictly: only a classifier head and MGCA's non-image parts may go") {
  test::TempDir tmp("pt_teacher_strict");
  PretrainOptions o = tiny_options(tmp);
  o.target = "teacher";
  o.teacher = "vit_tiny_patch16_224";
  const TensorMap full = teacher_weights();

  // A full timm file (its classifier head is documented as dropped) and an MGCA Lightning file
  // (only the image backbone under img_encoder_q.model. is read) load, every tensor in place.
  safetensors_save(tmp / "full.safetensors", full);
  TensorMap mgca;
  for (const auto& kv : without(full, "head."))
    mgca.emplace_back("img_encoder_q.model." + kv.first, kv.second);
  mgca.emplace_back("text_encoder_q.model.embeddings.weight", torch::zeros({7, 3}));
  mgca.emplace_back("img_encoder_q.global_embed.head.0.weight", torch::zeros({4, 192}));
  safetensors_save(tmp / "mgca.safetensors", mgca);
  for (const char* file : {"full.safetensors", "mgca.safetensors"}) {
    INFO(file);
    o.teacher_checkpoint = tmp / file;
    PretrainTask task(o, 0, 1);
    auto& teacher = dynamic_cast<TeacherTarget&>(const_cast<MimTarget&>(task.target())).model();
    const TensorMap got = state_dict_timm(*teacher);
    CHECK(got.size() == full.size() - 2);  // all but head.weight / head.bias
    for (const auto& kv : got) {
      INFO(kv.first);
      CHECK(torch::equal(kv.second, *find(full, kv.first)));
    }
  }

  // A file that fits in part: the last block and the final norm missing, one stray tensor.
  TensorMap partial = without(without(full, "blocks.11."), "norm.");
  partial.emplace_back("dist_token", torch::zeros({1, 1, 192}));
  safetensors_save(tmp / "partial.safetensors", partial);
  o.teacher_checkpoint = tmp / "partial.safetensors";
  const std::string err = error_of(o);
  CHECK_THAT(err, Contains(tmp / "partial.safetensors") && Contains("vit_tiny_patch16_224") &&
                      Contains("14 model keys missing [blocks.11.") && Contains("(14 in all)") &&
                      Contains("1 checkpoint keys unexpected [dist_token]"));
}

TEST_CASE("the student initialisation loads strictly: only mask_token and lm_head may differ") {
  test::TempDir tmp("pt_student_strict");
  PretrainOptions o = tiny_options(tmp);
  // A checkpoint as pretraining writes it: EVA-02 naming, a 2-block student with an lm_head for
  // 16x16 pixel targets (256-d).
  TensorMap written;
  {
    torch::manual_seed(9);
    PretrainTask first(o, 0, 1);
    written = first.model_state();
  }
  safetensors_save(tmp / "ckpt.safetensors", written);
  auto check_loaded = [&](PretrainTask& t, bool with_mim) {
    for (const auto& kv : map_timm_to_eva02(student_state(t))) {
      const bool mim = kv.first == "mask_token" || kv.first.rfind("lm_head.", 0) == 0;
      if (mim && !with_mim) continue;
      INFO(kv.first);
      const at::Tensor* w = find(written, kv.first);
      REQUIRE(w != nullptr);
      CHECK(torch::equal(kv.second, *w));
    }
  };

  // Fits: every tensor loaded.
  o.init_checkpoint = tmp / "ckpt.safetensors";
  {
    PretrainTask t(o, 0, 1);
    check_loaded(t, true);
  }
  // The documented drops: an lm_head for another target width (a 192-d teacher) and a file
  // without mask_token / lm_head leave those freshly initialised, the rest loaded.
  {
    safetensors_save(tmp / "teacher.safetensors", teacher_weights());
    PretrainOptions ot = o;
    ot.target = "teacher";
    ot.teacher = "vit_tiny_patch16_224";
    ot.teacher_checkpoint = tmp / "teacher.safetensors";
    PretrainTask t(ot, 0, 1);
    CHECK(t.student()->lm_head->weight.size(0) == 192);
    check_loaded(t, false);
  }
  {
    safetensors_save(tmp / "backbone.safetensors",
                     without(without(written, "lm_head."), "mask_token"));
    PretrainOptions ob = o;
    ob.init_checkpoint = tmp / "backbone.safetensors";
    PretrainTask t(ob, 0, 1);
    check_loaded(t, false);
  }
  // Fits in part: a 3-block student lacks its last block; a 1-block student leaves one unused.
  PretrainOptions deeper = o;
  deeper.depth = 3;
  CHECK_THAT(error_of(deeper), Contains(tmp / "ckpt.safetensors") &&
                                   Contains("student eva_x_tiny_patch16") &&
                                   Contains("13 model keys missing [blocks.2.") &&
                                   Contains("(13 in all)") && !Contains("unexpected"));
  PretrainOptions shallower = o;
  shallower.depth = 1;
  CHECK_THAT(error_of(shallower), Contains(tmp / "ckpt.safetensors") &&
                                      Contains("13 checkpoint keys unexpected [blocks.1.") &&
                                      !Contains("missing"));
}
