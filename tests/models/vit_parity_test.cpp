// Parity of evax ViTs with timm: fixtures from tools/make_model_fixtures.py (fixed seeds), loaded
// through every supported naming. fp32, max abs error 1e-4 on tokens and pooled features.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "evax/io/safetensors.h"
#include "evax/io/weight_file.h"
#include "evax/models/registry.h"
#include "evax/models/weights.h"
#include "tensor_util.h"
#include "test_util.h"

using namespace evax;
using Catch::Matchers::Contains;
using test::max_abs;

namespace {

std::string fixture(const std::string& name) {
  const std::string dir = std::string(EVAX_BINARY_DIR) + "/fixtures/models/";
  INFO("fixtures come from the ctest fixture 'models: make fixtures' (run ctest, or "
       "tools/make_model_fixtures.py --out " + dir + ")");
  REQUIRE(std::filesystem::exists(dir + name));
  return dir + name;
}

TensorMap load_ckpt(const std::string& path) {
  auto contents = weight_file_read(path);
  std::string key;
  return weight_file_state_dict(contents, &key);
}

struct Outputs {
  torch::Tensor tokens, pooled, logits;
};

Outputs run(VisionTransformer& m, const torch::Tensor& x) {
  torch::NoGradGuard ng;
  m->eval();
  Outputs o;
  o.tokens = m->forward_features(x);
  o.pooled = m->forward_head(o.tokens, true);
  if (m->head) o.logits = m->forward_head(o.tokens, false);
  return o;
}

void check_against(const Outputs& o, const std::string& ref_name) {
  auto ref = safetensors_load(fixture(ref_name));
  const double et = max_abs(o.tokens, *find(ref, "tokens"));
  const double ep = max_abs(o.pooled, *find(ref, "pooled"));
  INFO(ref_name << ": tokens max abs err " << et << ", pooled " << ep);
  CHECK(et <= 1e-4);
  CHECK(ep <= 1e-4);
  if (o.logits.defined() && contains(ref, "logits")) {
    const double el = max_abs(o.logits, *find(ref, "logits"));
    INFO("logits max abs err " << el);
    CHECK(el <= 1e-4);
  }
}

torch::Tensor ref_input(const std::string& ref_name) {
  return *find(safetensors_load(fixture(ref_name)), "pixel_values");
}

int64_t classes_of(const std::string& arch) { return arch == "eva_x_small_patch16" ? 14 : 0; }

}  // namespace

TEST_CASE("EVA-X and ViT-B match timm at 224 and 480 (timm safetensors)") {
  torch::set_num_threads(2);
  auto arch = GENERATE(as<std::string>{}, "eva_x_tiny_patch16", "eva_x_small_patch16",
                       "eva_x_base_patch16");
  auto size = GENERATE(224, 480);
  auto weights = safetensors_load(fixture(arch + "_224.timm.safetensors"));
  auto m = model_create(arch, classes_of(arch), size);
  auto rep = load_weights(*m, weights, WeightLoadOptions().strict(true));
  CHECK(rep.naming == WeightNaming::kTimm);
  CHECK(rep.missing.empty());
  const std::string ref = arch + "_" + std::to_string(size) + ".ref.safetensors";
  check_against(run(m, ref_input(ref)), ref);
  if (size == 480) CHECK_THAT(rep.summary(), Contains("pos_embed resampled from 14x14 to 30x30"));
}

TEST_CASE("A 224 model runs at 480 input with a resampled position embedding") {
  torch::set_num_threads(2);
  auto m = model_create("eva_x_tiny_patch16", 0, 224);
  load_weights(*m, safetensors_load(fixture("eva_x_tiny_patch16_224.timm.safetensors")));
  const std::string ref = "eva_x_tiny_patch16_480.ref.safetensors";
  check_against(run(m, ref_input(ref)), ref);
}

TEST_CASE("MGCA teacher (plain ViT-B/16) matches timm, from timm and MGCA Lightning files") {
  torch::set_num_threads(2);
  const std::string ref = "mgca_vit_base_patch16_224.ref.safetensors";
  auto m = model_create("mgca_vit_base_patch16");
  load_weights(*m, safetensors_load(fixture("mgca_vit_base_patch16_224.timm.safetensors")),
               WeightLoadOptions().strict(true));
  check_against(run(m, ref_input(ref)), ref);

  auto m2 = model_create("mgca_vit_base_patch16");
  auto rep = load_weights(*m2, load_ckpt(fixture("mgca_vit_base_patch16.mgca.ckpt")),
                          WeightLoadOptions().strict(true));
  CHECK(rep.naming == WeightNaming::kMgca);
  CHECK_THAT(rep.summary(), Contains("img_encoder_q.model."));
  check_against(run(m2, ref_input(ref)), ref);
}

TEST_CASE("Released-style EVA-02 files load: fp16 MIM under `model`, fp32 finetuned under `module`") {
  torch::set_num_threads(2);
  auto arch = GENERATE(as<std::string>{}, "eva_x_tiny_patch16", "eva_x_small_patch16",
                       "eva_x_base_patch16");
  const std::string ref = arch + "_224.ref.safetensors";
  {
    // The MIM file has no classifier head: compare features only.
    auto m = model_create(arch, 0, 224);
    auto rep = load_weights(*m, load_ckpt(fixture(arch + ".eva02_mim.pt")),
                            WeightLoadOptions().strict(true));
    CHECK(rep.naming == WeightNaming::kEva02);
    CHECK_THAT(rep.summary(), Contains("dropped mask_token and lm_head") &&
                                  Contains("norm.* loaded as fc_norm.*") && Contains("rope"));
    auto o = run(m, ref_input(ref));
    o.logits = torch::Tensor();
    check_against(o, ref);
  }
  {
    auto m = model_create(arch, classes_of(arch), 224);
    auto rep = load_weights(*m, load_ckpt(fixture(arch + ".eva02_ft.pth")),
                            WeightLoadOptions().strict(true));
    CHECK(rep.naming == WeightNaming::kEva02);
    check_against(run(m, ref_input(ref)), ref);
  }
}

TEST_CASE("Wrong-architecture checkpoints are clear errors") {
  auto tiny = model_create("eva_x_tiny_patch16");
  auto small_w = safetensors_load(fixture("eva_x_small_patch16_224.timm.safetensors"));
  try {
    load_weights(*tiny, small_w);
    FAIL("no error");
  } catch (const DataError& e) {
    CHECK_THAT(e.what(), Contains("size mismatch") && Contains("checkpoint [384] vs model [192]"));
  }
  auto base = model_create("eva_x_base_patch16");
  CHECK_THROWS_AS(load_weights(*base, load_ckpt(fixture("mgca_vit_base_patch16.mgca.ckpt"))),
                  DataError);
  // Non-strict tolerates the head it cannot use, strict does not accept missing keys.
  auto headed = model_create("eva_x_tiny_patch16", 5);
  auto tiny_w = safetensors_load(fixture("eva_x_tiny_patch16_224.timm.safetensors"));
  auto rep = load_weights(*headed, tiny_w);
  const std::vector<std::string> want{"head.weight", "head.bias"};
  CHECK(rep.missing == want);
  CHECK_THROWS_WITH(load_weights(*headed, tiny_w, WeightLoadOptions().strict(true)),
                    Contains("missing [head.weight, head.bias]"));
  TensorMap junk{{"foo.weight", torch::zeros({3})}};
  CHECK_THROWS_WITH(load_weights(*tiny, junk), Contains("none of its 1 tensors"));
}

TEST_CASE("Round trip: evax → safetensors (timm naming) → timm strict load → same outputs") {
  const char* py = EVAX_PYTHON;
  if (std::string(py).empty()) FAIL("EVAX_PYTHON not configured");
  test::TempDir tmp("roundtrip");
  auto m = model_create("eva_x_base_patch16", 3, 224);
  // Random weights from evax's own init, plus a non-trivial head.
  {
    torch::NoGradGuard ng;
    m->head->weight.normal_(0, 0.02);
  }
  const std::string ref = "eva_x_base_patch16_224.ref.safetensors";
  auto x = ref_input(ref);
  auto o = run(m, x);
  safetensors_save(tmp / "w.safetensors", state_dict_timm(*m));
  safetensors_save(tmp / "io.safetensors", {{"x", x}, {"tokens", o.tokens}, {"logits", o.logits}});
  const std::string script = tmp / "check.py";
  {
    std::ofstream f(script);
    f << "import sys, torch\n"
         "from safetensors.torch import load_file\n"
         "from timm.models.eva import Eva\n"
         "m = Eva(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,\n"
         "        qkv_fused=False, mlp_ratio=4*2/3, swiglu_mlp=True, scale_mlp=True,\n"
         "        use_rot_pos_emb=True, ref_feat_shape=(14, 14), num_classes=3).eval()\n"
         "m.load_state_dict(load_file(sys.argv[1]), strict=True)\n"
         "io = load_file(sys.argv[2])\n"
         "with torch.no_grad():\n"
         "    t = m.forward_features(io['x']); l = m.forward_head(t)\n"
         "e = max((t - io['tokens']).abs().max().item(), (l - io['logits']).abs().max().item())\n"
         "print('max abs err', e)\n"
         "sys.exit(0 if e <= 1e-4 else 1)\n";
  }
  const std::string cmd = std::string(py) + " '" + script + "' '" + (tmp / "w.safetensors") +
                          "' '" + (tmp / "io.safetensors") + "'";
  CHECK(std::system(cmd.c_str()) == 0);
}
