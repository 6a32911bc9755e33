// evax inspect / convert / embed against the timm reference fixtures (tools/make_model_fixtures.py).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "evax/core/files.h"
#include "evax/io/safetensors.h"
#include "cli_util.h"
#include "tensor_util.h"
#include "test_util.h"

using Catch::Matchers::Contains;
using evax::test::evax_bin;
using evax::test::max_abs;
using evax::test::shell;

namespace {

std::string fixture(const std::string& name) {
  const std::string p = std::string(EVAX_BINARY_DIR) + "/fixtures/models/" + name;
  INFO("fixture " << p << " comes from the ctest fixture 'models: make fixtures'");
  REQUIRE(std::filesystem::exists(p));
  return p;
}

}  // namespace

TEST_CASE("inspect reports format, keys, naming and model") {
  evax::test::TempDir tmp("inspect");
  REQUIRE(shell(evax_bin() + " inspect '" + fixture("eva_x_base_patch16.eva02_mim.pt") + "' >'" +
                (tmp / "out") + "'") == 0);
  std::string out = evax::read_file(tmp / "out");
  CHECK_THAT(out, Contains("format:  torch-zip") && Contains("args: argparse.Namespace") &&
                      Contains("naming:  eva02") && Contains("model:   eva_x_base_patch16") &&
                      Contains("blocks.0.attn.q_proj.weight  [768, 768]  Half"));
  REQUIRE(shell(evax_bin() + " inspect '" + fixture("mgca_vit_base_patch16.mgca.ckpt") + "' >'" +
                (tmp / "out") + "'") == 0);
  CHECK_THAT(evax::read_file(tmp / "out"), Contains("naming:  mgca") && Contains("'state_dict'"));
  CHECK(shell(evax_bin() + " inspect '" + (tmp / "out") + "' 2>/dev/null") == 3);  // not a checkpoint
}

TEST_CASE("convert: released-style MIM file → timm safetensors → timm Eva strict load, same outputs") {
  const char* py = EVAX_PYTHON;
  evax::test::TempDir tmp("convert");
  REQUIRE(shell(evax_bin() + " convert '" + fixture("eva_x_tiny_patch16.eva02_mim.pt") + "' '" +
                (tmp / "w.safetensors") + "' --dtype fp32 2>/dev/null") == 0);
  std::ofstream(tmp / "check.py")
      << "import sys, torch\n"
         "from safetensors.torch import load_file\n"
         "from timm.models.eva import Eva\n"
         "m = Eva(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3,\n"
         "        mlp_ratio=4*2/3, swiglu_mlp=True, use_rot_pos_emb=True, ref_feat_shape=(14, 14),\n"
         "        num_classes=0).eval()\n"
         "m.load_state_dict(load_file(sys.argv[1]), strict=True)\n"
         "ref = load_file(sys.argv[2])\n"
         "with torch.no_grad():\n"
         "    t = m.forward_features(ref['pixel_values'])\n"
         "e = (t - ref['tokens']).abs().max().item()\n"
         "print('convert round trip max abs err', e)\n"
         "sys.exit(0 if e <= 1e-4 else 1)\n";
  CHECK(shell(std::string(py) + " '" + (tmp / "check.py") + "' '" + (tmp / "w.safetensors") + "' '" +
              fixture("eva_x_tiny_patch16_224.ref.safetensors") + "'") == 0);
  // evax naming keeps the MIM head and round-trips through inspect.
  REQUIRE(shell(evax_bin() + " convert '" + fixture("eva_x_tiny_patch16.eva02_mim.pt") + "' '" +
                (tmp / "e.safetensors") + "' --naming evax 2>/dev/null") == 0);
  auto e = evax::safetensors_load(tmp / "e.safetensors");
  CHECK(evax::contains(e, "mask_token"));
  CHECK(evax::contains(e, "lm_head.weight"));
  CHECK(evax::contains(e, "blocks.0.mlp.w12.weight"));
  CHECK(shell(evax_bin() + " convert a b --naming nope 2>/dev/null") == 2);
}

TEST_CASE("embed: pixel_values in, timm tokens and pooled out") {
  evax::test::TempDir tmp("embed");
  const std::string ref = fixture("eva_x_small_patch16_224.ref.safetensors");
  REQUIRE(shell(evax_bin() + " embed --model eva_x_small_patch16 --checkpoint '" +
                fixture("eva_x_small_patch16.eva02_ft.pth") + "' --input '" + ref + "' --out '" +
                (tmp / "f.safetensors") + "' --batch-size 1 2>/dev/null") == 0);
  auto f = evax::safetensors_load(tmp / "f.safetensors");
  auto r = evax::safetensors_load(ref);
  CHECK(max_abs(*evax::find(f, "tokens"), *evax::find(r, "tokens")) <= 1e-4);
  CHECK(max_abs(*evax::find(f, "pooled"), *evax::find(r, "pooled")) <= 1e-4);
  // A wrong-architecture checkpoint is a data error, not a crash.
  CHECK(shell(evax_bin() + " embed --model eva_x_tiny_patch16 --checkpoint '" +
              fixture("eva_x_small_patch16.eva02_ft.pth") + "' --input '" + ref + "' --out '" +
              (tmp / "g.safetensors") + "' 2>/dev/null") == 3);
}

TEST_CASE("embed: a folder of PNG and DICOM files gets the evaluation transform") {
  evax::test::TempDir tmp("embed_img");
  REQUIRE(shell(evax_bin() + " synth --out '" + (tmp / "s") + "' --n 3 --size 256 --seed 1 --threads 1 "
                "2>/dev/null") == 0);
  REQUIRE(shell(evax_bin() + " embed --model eva_x_tiny_patch16 --checkpoint '" +
                fixture("eva_x_tiny_patch16_224.timm.safetensors") + "' --input '" + (tmp / "s/png") +
                "' --out '" + (tmp / "png.safetensors") + "' 2>/dev/null") == 0);
  REQUIRE(shell(evax_bin() + " embed --model eva_x_tiny_patch16 --checkpoint '" +
                fixture("eva_x_tiny_patch16_224.timm.safetensors") + "' --input '" + (tmp / "s/dicom") +
                "' --out '" + (tmp / "dcm.safetensors") + "' 2>/dev/null") == 0);
  std::map<std::string, std::string> meta;
  auto png = evax::safetensors_load(tmp / "png.safetensors", &meta);
  auto dcm = evax::safetensors_load(tmp / "dcm.safetensors");
  CHECK(evax::find(png, "tokens")->sizes() == at::IntArrayRef({3, 197, 192}));
  CHECK(evax::find(png, "pooled")->sizes() == at::IntArrayRef({3, 192}));
  CHECK_THAT(meta["inputs"], Contains("synth_000000.png") && Contains("synth_000002.png"));
  // The 16-bit DICOM and its 8-bit PNG export give nearly the same features.
  const auto& a = *evax::find(png, "pooled");
  const auto& b = *evax::find(dcm, "pooled");
  const double rel = ((a - b).norm() / a.norm()).item<double>();
  INFO("relative pooled difference DICOM vs PNG: " << rel);
  CHECK(rel < 0.05);
  CHECK(shell(evax_bin() + " embed --model eva_x_tiny_patch16 --input '" + (tmp / "nothing") + "' --out '" +
              (tmp / "x.safetensors") + "' 2>/dev/null") == 3);
}
