// EVA-X's layer decay and finetuning weight-decay rule on our EVA-X Ti/S/B classifiers (avg pool,
// fc_norm, head) against tools/eva_x_lrd_reference.py (EVA-X's param_groups_lrd applied to timm's
// Eva): the same parameter names, and for each exactly the same lr scale and weight decay.
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "evax/models/layer_decay.h"
#include "evax/models/registry.h"
#include "evax/models/vit.h"
#include "python_reference.h"
#include "skip.h"
#include "test_util.h"

using namespace evax;

TEST_CASE("layer ids follow get_layer_id_for_vit") {
  CHECK(vit_layer_id("cls_token", 12) == 0);
  CHECK(vit_layer_id("pos_embed", 12) == 0);
  CHECK(vit_layer_id("patch_embed.proj.weight", 12) == 0);
  CHECK(vit_layer_id("blocks.0.norm1.weight", 12) == 1);
  CHECK(vit_layer_id("blocks.11.mlp.fc2.bias", 12) == 12);
  CHECK(vit_layer_id("fc_norm.weight", 12) == 13);
  CHECK(vit_layer_id("head.bias", 12) == 13);
  CHECK(vit_layer_id("mask_token", 12) == 13);  // EVA-X's rule has no mask-token case
  CHECK(vit_layer_decay_scale("head.weight", 12, 0.55) == 1.0);
}

TEST_CASE("EVA-X layer decay groups equal EVA-X's param_groups_lrd on Ti/S/B") {
  if (std::string(EVAX_PYTHON).empty()) EVAX_SKIP("EVAX_PYTHON not configured: no Python reference");
  std::ifstream f(
      test::python_reference_file("eva_x_lrd_reference.py", "models/eva_x_lrd_reference.json"));
  const nlohmann::json ref = nlohmann::json::parse(f);
  const double wd = ref.at("weight_decay").get<double>();
  REQUIRE(ref.at("cases").size() == 9);
  for (const auto& c : ref.at("cases")) {
    const std::string arch = c.at("arch").get<std::string>();
    const double decay = c.at("layer_decay").get<double>();
    VisionTransformer model(model_options(arch).num_classes(14));
    const int64_t depth = model->options().depth();
    REQUIRE(depth == c.at("depth").get<int64_t>());
    const auto& table = c.at("params");
    std::set<std::string> ours;
    int mismatches = 0;
    for (const auto& kv : model->named_parameters()) {
      const std::string& name = kv.key();
      ours.insert(name);
      INFO(arch << " layer_decay " << decay << " " << name);
      REQUIRE(table.contains(name));
      const double scale = vit_layer_decay_scale(name, depth, decay);
      const double w = eva_x_finetune_no_weight_decay(name, kv.value()) ? 0.0 : wd;
      if (scale != table.at(name)[0].get<double>() || w != table.at(name)[1].get<double>()) {
        ++mismatches;
        CHECK(scale == table.at(name)[0].get<double>());
        CHECK(w == table.at(name)[1].get<double>());
      }
    }
    INFO(arch << " layer_decay " << decay);
    CHECK(mismatches == 0);
    CHECK(ours.size() == table.size());
  }
}
