// UperNet on EVA-X (segment/upernet.h) against an independent PyTorch implementation
// (tools/upernet_reference.py: timm's Eva run block by block as EVA-X's EVA_X backbone, and
// EVA_X's simple pyramid, mmseg 0.29's UPerHead/PPM and FCNHead written from their structure, with
// EVA-X/mmseg state-dict names). Every weight and every BatchNorm running statistic is random;
// the models run in eval mode. Three cases: EVA-X-S widths with use_last_feat_only (a later block
// exists and must not matter), EVA-X-S with four out_indices and the auxiliary head (3 softmax
// channels), and EVA-X-B widths (split q/k/v, sub-LN SwiGLU: the other EVA-02 key layout).
//
// Measured (x86, 2 threads), max abs vs the reference: fp32 pyramid features 4.5e-6, logits
// 2.6e-6, resized logits 2.3e-6, auxiliary logits 3.8e-6 (tolerance 1e-4; logits are O(1));
// fp64 1.2e-14 at most (tolerance 1e-10). The parity test prints them. Moving the auxiliary head
// to level 1 or swapping the RoPE cos/sin buffers fails it (tried by hand). About 15 s with the
// reference made (it takes 7 s to make; 160 MB in the build tree).
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "evax/io/safetensors.h"
#include "evax/models/registry.h"
#include "evax/models/weights.h"
#include "evax/segment/upernet.h"
#include "python_reference.h"
#include "skip.h"
#include "tensor_util.h"
#include "test_util.h"

using namespace evax;
using test::max_abs;

namespace {

constexpr double kTol = 1e-4;     // fp32, as mmseg runs
constexpr double kTol64 = 1e-10;  // the same weights in fp64

const char* kCases[] = {"last", "multi", "base"};

const TensorMap& reference() {
  static const TensorMap map =
      test::python_reference("upernet_reference.py", "segment/upernet_reference.safetensors");
  return map;
}

torch::Tensor rt(const std::string& name) { return test::reference_tensor(reference(), name); }

TensorMap ref_weights(const std::string& c) {
  return test::with_prefix(reference(), c + "/weights/");
}

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  auto c = t.to(torch::kInt64).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// The case's architecture, from the script's config record.
UperNetOptions case_options(const std::string& c) {
  const auto cfg = to_vector(rt(c + "/config"));
  REQUIRE(cfg.size() == 8);
  const std::string backbone = cfg[7] == 768 ? "eva_x_base_patch16" : "eva_x_small_patch16";
  return UperNetOptions()
      .backbone(backbone)
      .depth(cfg[0])
      .img_size(cfg[1])
      .use_last_feat_only(cfg[2] != 0)
      .aux_head(cfg[3] != 0)
      .num_classes(cfg[4])
      .out_channels(cfg[5])
      .channels(cfg[6])
      .out_indices(to_vector(rt(c + "/out_indices")))
      .drop_path_rate(0.0);
}

UperNet loaded_model(const std::string& c) {
  UperNet m(case_options(c));
  m->load_state_dict_mmseg(ref_weights(c), /*strict=*/true);
  m->eval();
  return m;
}

std::set<std::string> key_set(const TensorMap& m) {
  std::set<std::string> s;
  for (const auto& kv : m) s.insert(kv.first);
  return s;
}

bool mentions(const std::string& message, const std::string& what) {
  return message.find(what) != std::string::npos;
}

// The exception message of `fn` (which must throw a DataError).
template <class Fn>
std::string data_error(Fn&& fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  }
  FAIL("no DataError");
  return "";
}

}  // namespace

TEST_CASE("upernet logits equal the PyTorch reference in eval mode") {
  if (reference().empty()) EVAX_SKIP("EVAX_PYTHON not configured: no Python reference");
  torch::set_num_threads(2);
  torch::NoGradGuard ng;
  for (const std::string c : kCases) {
    INFO("case " << c);
    UperNet m(case_options(c));
    const WeightLoadReport rep = m->load_state_dict_mmseg(ref_weights(c), /*strict=*/true);
    INFO(rep.summary());
    CHECK(rep.missing.empty());
    CHECK(rep.unexpected.empty());
    m->eval();
    const auto x = rt(c + "/input");
    for (const std::string prec : {"fp32", "fp64"}) {
      const bool fp64 = prec == "fp64";
      const double tol = fp64 ? kTol64 : kTol;
      m->to(fp64 ? torch::kFloat64 : torch::kFloat32);
      const auto xin = x.to(fp64 ? torch::kFloat64 : torch::kFloat32);
      const std::string p = c + "/" + prec + "/";
      auto feats = m->forward_pyramid(xin);
      REQUIRE(feats.size() == 4);
      double feat_diff = 0;
      for (int l = 0; l < 4; ++l)
        feat_diff = std::max(feat_diff, max_abs(feats[l], rt(p + "features/" + std::to_string(l))));
      const UperNetOutput out = m->forward_train(xin);  // eval mode: deterministic
      const auto logits = m->forward(xin);
      const double logit_diff = max_abs(logits, rt(p + "logits"));
      CHECK(torch::equal(out.logits, logits));
      const auto resized = torch::nn::functional::interpolate(
          logits, torch::nn::functional::InterpolateFuncOptions()
                      .size(std::vector<int64_t>{int64_t(x.size(2)), int64_t(x.size(3))})
                      .mode(torch::kBilinear)
                      .align_corners(false));
      const double resized_diff = max_abs(resized, rt(p + "resized"));
      double aux_diff = 0;
      if (m->options().aux_head()) {
        REQUIRE(out.aux.defined());
        aux_diff = max_abs(out.aux, rt(p + "aux_logits"));
      } else {
        CHECK(!out.aux.defined());
      }
      std::cout << "upernet parity " << c << " " << prec << ": features " << feat_diff
                << ", logits " << logit_diff << ", resized " << resized_diff << ", aux "
                << aux_diff << "\n";
      CHECK(feat_diff < tol);
      CHECK(logit_diff < tol);
      CHECK(resized_diff < tol);
      CHECK(aux_diff < tol);
    }
  }
}

TEST_CASE("upernet strict mmseg load names missing, extra and mis-shaped keys") {
  if (reference().empty()) EVAX_SKIP("EVAX_PYTHON not configured: no Python reference");
  const TensorMap good = ref_weights("last");
  UperNet m(case_options("last"));

  SECTION("missing") {
    TensorMap sd;
    for (const auto& kv : good)
      if (kv.first != "decode_head.fpn_bottleneck.bn.running_var") sd.push_back(kv);
    const std::string msg = data_error([&] { m->load_state_dict_mmseg(sd, true); });
    CHECK(mentions(msg, "1 model keys missing"));
    CHECK(mentions(msg, "decode_head.fpn_bottleneck.bn.running_var"));
    // Not strict: loads and reports it.
    const WeightLoadReport rep = m->load_state_dict_mmseg(sd, false);
    CHECK(rep.missing == std::vector<std::string>{"decode_head.fpn_bottleneck.bn.running_var"});
  }
  SECTION("unexpected") {
    TensorMap sd = good;
    sd.emplace_back("decode_head.extra_conv.weight", torch::zeros({4}));
    const std::string msg = data_error([&] { m->load_state_dict_mmseg(sd, true); });
    CHECK(mentions(msg, "1 checkpoint keys unexpected"));
    CHECK(mentions(msg, "decode_head.extra_conv.weight"));
  }
  SECTION("mis-shaped, strict or not") {
    TensorMap sd = good;
    *find(sd, "backbone.blocks.0.mlp.w12.weight") = torch::zeros({10, 384});
    for (bool strict : {true, false}) {
      const std::string msg = data_error([&] { m->load_state_dict_mmseg(sd, strict); });
      CHECK(mentions(msg, "backbone.blocks.0.mlp.w12.weight"));
      CHECK(mentions(msg, "size mismatch"));
    }
  }
  SECTION("timm backbone names are not mmseg names") {
    TensorMap sd = good;
    for (auto& kv : sd)
      if (kv.first == "backbone.blocks.0.mlp.w3.weight")
        kv.first = "backbone.blocks.0.mlp.fc2.weight";
    const std::string msg = data_error([&] { m->load_state_dict_mmseg(sd, true); });
    CHECK(mentions(msg, "backbone.blocks.0.mlp.w3.weight"));
    CHECK(mentions(msg, "backbone.blocks.0.mlp.fc2.weight"));
  }
  SECTION("rope buffers are optional, a module. prefix is stripped") {
    TensorMap sd;
    for (const auto& kv : good)
      if (kv.first.find("rope.freqs_") == std::string::npos)
        sd.emplace_back("module." + kv.first, kv.second);
    REQUIRE(sd.size() < good.size());
    const WeightLoadReport rep = m->load_state_dict_mmseg(sd, true);
    CHECK(rep.loaded == sd.size());
  }
}

TEST_CASE("upernet state_dict_mmseg has the reference's keys and round-trips") {
  if (reference().empty()) EVAX_SKIP("EVAX_PYTHON not configured: no Python reference");
  torch::set_num_threads(2);
  for (const std::string c : kCases) {
    INFO("case " << c);
    const TensorMap want = ref_weights(c);
    UperNet m = loaded_model(c);
    const TensorMap sd = m->state_dict_mmseg();
    CHECK(key_set(sd) == key_set(want));
    CHECK(sd.size() == want.size());  // no duplicates
    for (const auto& [k, v] : want) {
      const at::Tensor* got = find(sd, k);
      REQUIRE(got);
      INFO(k);
      REQUIRE(got->sizes() == v.sizes());
      CHECK(got->scalar_type() == v.scalar_type());
      // Loaded values come back; the RoPE buffers, recomputed from evax's rope_table, are
      // bit-equal to EVA-X's VisionRotaryEmbeddingFast (computed by the script).
      CHECK(max_abs(*got, v) == 0);
    }
    // Parameters in mmseg naming: every trainable tensor once.
    const auto params = m->named_params_mmseg();
    CHECK(params.size() == m->parameters().size());
    for (const auto& p : params) CHECK(contains(want, p.name));
  }

  // Save → load into a fresh model → identical logits.
  test::TempDir dir("upernet");
  UperNet a = loaded_model("multi");
  const std::string path = dir / "model.safetensors";
  TensorMap cpu;
  for (const auto& [k, v] : a->state_dict_mmseg()) cpu.emplace_back(k, v.contiguous());
  safetensors_save(path, cpu);
  UperNet b(case_options("multi"));
  const WeightLoadReport rep = upernet_load_file(*b, path, /*strict=*/true);
  INFO(rep.summary());
  b->eval();
  torch::NoGradGuard ng;
  const auto x = rt("multi/input");
  const auto oa = a->forward_train(x), ob = b->forward_train(x);
  CHECK(torch::equal(oa.logits, ob.logits));
  CHECK(torch::equal(oa.aux, ob.aux));
  CHECK(test::same_maps(a->state_dict_mmseg(), b->state_dict_mmseg()));
}

TEST_CASE("upernet loads an mmseg checkpoint file") {
  if (reference().empty()) EVAX_SKIP("EVAX_PYTHON not configured: no Python reference");
  torch::set_num_threads(2);
  // Written by the script next to its safetensors: {meta, state_dict, optimizer} via torch.save.
  const std::string st =
      test::python_reference_file("upernet_reference.py", "segment/upernet_reference.safetensors");
  const std::string pth =
      st.substr(0, st.size() - std::string(".safetensors").size()) + "_mmseg.pth";
  REQUIRE(std::filesystem::exists(pth));
  UperNet m(case_options("last"));
  const WeightLoadReport rep = upernet_load_file(*m, pth, /*strict=*/true);
  INFO(rep.summary());
  CHECK(mentions(rep.summary(), "weights under 'state_dict'"));
  CHECK(mentions(rep.summary(), "rope buffers"));
  m->eval();
  torch::NoGradGuard ng;
  CHECK(max_abs(m->forward(rt("last/input")), rt("last/fp32/logits")) < kTol);
}

TEST_CASE("upernet load_backbone takes EVA-X MIM weights and resamples pos_embed") {
  torch::manual_seed(3);
  // A released-style MIM checkpoint: EVA-02 naming, 14×14 pos_embed, final norm, mask token,
  // lm_head, rope buffers, fp16.
  ViTOptions vo = model_options("eva_x_small_patch16");
  vo.depth(2).img_size(224).mim_dim(8).final_norm(true);
  VisionTransformer mim(vo);
  TensorMap sd = map_timm_to_eva02(state_dict_timm(*mim));
  sd.emplace_back("rope.freqs_cos", torch::zeros({196, 64}));
  sd.emplace_back("rope.freqs_sin", torch::zeros({196, 64}));
  for (auto& kv : sd) kv.second = kv.second.detach().to(torch::kHalf);
  REQUIRE(contains(sd, "blocks.0.mlp.w12.weight"));
  REQUIRE(contains(sd, "mask_token"));

  auto o = UperNetOptions().depth(2).img_size(96).out_indices({0, 1});
  UperNet net(o);
  const auto fpn_before = net->fpn1[0]->as<torch::nn::ConvTranspose2dImpl>()->weight.clone();
  for (bool strict : {false, true}) {
    const WeightLoadReport rep = net->load_backbone(sd, strict);
    INFO(rep.summary());
    CHECK(rep.naming == WeightNaming::kEva02);
    CHECK(rep.missing.empty());
    CHECK(rep.unexpected.empty());
    CHECK(mentions(rep.summary(), "pos_embed resampled from 14x14 to 6x6"));
    CHECK(mentions(rep.summary(), "ignored"));
    CHECK(mentions(rep.summary(), "norm.weight"));
  }
  // Resampled in fp32, stored in the checkpoint's dtype (fp16), then cast to the model's.
  const auto want_pos = resample_pos_embed(find(sd, "pos_embed")->to(torch::kFloat32), 14, 14, 6, 6)
                            .to(torch::kHalf)
                            .to(torch::kFloat32);
  CHECK(max_abs(net->backbone->pos_embed, want_pos) == 0);
  CHECK(max_abs(net->backbone->blocks[1]->as<BlockImpl>()->mlp->fc1->weight,
                find(sd, "blocks.1.mlp.w12.weight")->to(torch::kFloat32)) == 0);
  CHECK(torch::equal(net->fpn1[0]->as<torch::nn::ConvTranspose2dImpl>()->weight, fpn_before));

  // Through a file, as upernet_load_file sees it (not a segmentation checkpoint).
  test::TempDir dir("upernet_mim");
  TensorMap nested;
  for (const auto& kv : sd) nested.emplace_back(kv.first, kv.second.contiguous());
  safetensors_save(dir / "mim.safetensors", nested);
  UperNet net2(o);
  const WeightLoadReport rep2 = upernet_load_file(*net2, dir / "mim.safetensors");
  CHECK(rep2.naming == WeightNaming::kEva02);
  CHECK(rep2.loaded == net2->backbone->parameters().size());
  CHECK(torch::equal(net2->backbone->pos_embed, net->backbone->pos_embed));

  // A checkpoint of another architecture does not fit.
  ViTOptions tiny = model_options("eva_x_tiny_patch16");
  tiny.depth(2);
  const TensorMap tiny_sd = map_timm_to_eva02(state_dict_timm(*VisionTransformer(tiny)));
  const std::string msg = data_error([&] { net->load_backbone(tiny_sd, false); });
  CHECK(mentions(msg, "size mismatch"));
}

TEST_CASE("upernet runs at a non-default size and in training") {
  torch::manual_seed(5);
  torch::set_num_threads(2);
  auto o = UperNetOptions()
               .backbone("eva_x_tiny_patch16")
               .depth(2)
               .img_size(80)
               .out_indices({0, 1})
               .channels(32)
               .aux_head(true);
  UperNet m(o);
  CHECK(m->grid() == 5);
  const TensorMap sd = m->state_dict_mmseg();
  CHECK(find(sd, "backbone.pos_embed")->sizes() == c10::IntArrayRef({1, 26, 192}));
  CHECK(find(sd, "backbone.rope.freqs_cos")->sizes() == c10::IntArrayRef({25, 64}));
  CHECK(find(sd, "backbone.blocks.1.attn.rope.freqs_sin")->sizes() == c10::IntArrayRef({25, 64}));

  m->train();
  auto x = torch::randn({2, 3, 80, 80});
  const auto out = m->forward_train(x);
  CHECK(out.logits.sizes() == c10::IntArrayRef({2, 1, 20, 20}));
  CHECK(out.aux.sizes() == c10::IntArrayRef({2, 1, 5, 5}));
  (out.logits.mean() + out.aux.mean()).backward();
  CHECK(m->backbone->pos_embed.grad().defined());
  CHECK(m->decode_head->conv_seg->weight.grad().abs().sum().item<double>() > 0);
  CHECK(find(m->state_dict_mmseg(), "backbone.fpn1.1.num_batches_tracked")->item<int64_t>() == 1);
  CHECK(m->norm_buffers().size() == 3 * (1 + 4 + 1 + 3 + 3 + 1 + 1));

  // Other multiples of 16 at inference (pos_embed and RoPE follow the grid), not other sizes.
  m->eval();
  torch::NoGradGuard ng;
  CHECK(m->forward(torch::randn({1, 3, 96, 64})).sizes() == c10::IntArrayRef({1, 1, 24, 16}));
  CHECK_THROWS_AS(m->forward(torch::randn({1, 3, 72, 80})), ConfigError);
}

TEST_CASE("upernet registered names and the default EVA-X-S layout") {
  const auto names = upernet_model_names();
  CHECK(names == std::vector<std::string>{"upernet_eva_x_base_patch16",
                                          "upernet_eva_x_small_patch16",
                                          "upernet_eva_x_tiny_patch16"});
  CHECK(upernet_options("upernet_eva_x_base_patch16").backbone() == "eva_x_base_patch16");
  try {
    upernet_options("upernet_vit_small");
    FAIL("no ConfigError");
  } catch (const ConfigError& e) {
    CHECK(mentions(e.what(), "upernet_eva_x_small_patch16"));
  }
  CHECK_THROWS_AS(UperNet(UperNetOptions().num_classes(3).out_channels(1)), ConfigError);
  CHECK_THROWS_AS(UperNet(UperNetOptions().depth(4)), ConfigError);  // out_indices up to 11
  CHECK_THROWS_AS(UperNet(UperNetOptions().depth(4).out_indices({1, 2}).use_last_feat_only(false)),
                  ConfigError);
  CHECK_THROWS_AS(UperNet(UperNetOptions().norm("gn")), ConfigError);
  CHECK_THROWS_AS(UperNet(UperNetOptions().backbone("vit_small_patch16_224")), ConfigError);

  // EVA-X's upernet_eva_x_small at 512: the shapes mmseg's checkpoint has.
  torch::manual_seed(0);
  UperNet m(upernet_options("upernet_eva_x_small_patch16"));
  CHECK(m->backbone_depth() == 12);
  const TensorMap sd = m->state_dict_mmseg();
  auto shape = [&](const std::string& k) {
    const at::Tensor* t = find(sd, k);
    INFO(k);
    REQUIRE(t);
    return t->sizes().vec();
  };
  using V = std::vector<int64_t>;
  CHECK(shape("backbone.pos_embed") == V{1, 1025, 384});
  CHECK(shape("backbone.rope.freqs_cos") == V{1024, 64});
  CHECK(shape("backbone.blocks.11.attn.qkv.weight") == V{1152, 384});
  CHECK(shape("backbone.blocks.11.attn.q_bias") == V{384});
  CHECK(shape("backbone.blocks.11.mlp.w12.weight") == V{2048, 384});
  CHECK(shape("backbone.blocks.11.mlp.w3.weight") == V{384, 1024});
  CHECK(shape("backbone.fpn1.0.weight") == V{384, 384, 2, 2});
  CHECK(shape("backbone.fpn1.1.running_var") == V{384});
  CHECK(shape("backbone.fpn1.3.weight") == V{384, 384, 2, 2});
  CHECK(shape("backbone.fpn2.0.weight") == V{384, 384, 2, 2});
  CHECK(shape("decode_head.psp_modules.3.1.conv.weight") == V{256, 384, 1, 1});
  CHECK(shape("decode_head.bottleneck.conv.weight") == V{256, 1408, 3, 3});
  CHECK(shape("decode_head.lateral_convs.2.conv.weight") == V{256, 384, 1, 1});
  CHECK(shape("decode_head.fpn_convs.0.conv.weight") == V{256, 256, 3, 3});
  CHECK(shape("decode_head.fpn_bottleneck.conv.weight") == V{256, 1024, 3, 3});
  CHECK(shape("decode_head.fpn_bottleneck.bn.num_batches_tracked") == V{});
  CHECK(shape("decode_head.conv_seg.weight") == V{1, 256, 1, 1});
  CHECK(!contains(sd, "decode_head.bottleneck.conv.bias"));
  CHECK(!contains(sd, "backbone.norm.weight"));
  CHECK(!contains(sd, "backbone.fc_norm.weight"));
  CHECK(!contains(sd, "auxiliary_head.conv_seg.weight"));
  // 12 blocks × 13 keys + rope (2 + 12·2) + cls/pos/patch (4) + fpn (2 + 5 + 2 + 2) + head.
  size_t head = 0;
  for (const auto& kv : sd) head += kv.first.rfind("decode_head.", 0) == 0;
  CHECK(head == 2 + 6 * (4 + 1 + 3 + 3 + 1));
  CHECK(sd.size() == 12 * 13 + 26 + 4 + 11 + head);

  // mmcv/EVA-X initialisation: conv_seg ~ N(0, 0.01), ConvModule convs kaiming fan_out.
  const auto& seg = *find(sd, "decode_head.conv_seg.weight");
  CHECK(seg.std().item<double>() == Approx(0.01).epsilon(0.15));
  const auto& fb = *find(sd, "decode_head.fpn_bottleneck.conv.weight");
  CHECK(fb.std().item<double>() == Approx(std::sqrt(2.0 / (256 * 9))).epsilon(0.02));
  CHECK(find(sd, "decode_head.conv_seg.bias")->abs().max().item<double>() == 0);
}

TEST_CASE("upernet channels-last: same logits, gradients and BatchNorm statistics as NCHW") {
  torch::set_num_threads(2);
  auto o = UperNetOptions()
               .backbone("eva_x_tiny_patch16")
               .depth(2)
               .img_size(96)
               .out_indices({0, 1})
               .channels(32)
               .dropout(0)
               .drop_path_rate(0)
               .aux_head(true);
  torch::manual_seed(11);
  UperNet a(o);
  torch::manual_seed(11);
  UperNet b(o);
  b->set_channels_last(true);
  CHECK(b->channels_last());
  // Weights are the same values, stored NHWC (the ViT's patch conv excepted).
  CHECK(b->decode_head->bottleneck->conv->weight.is_contiguous(at::MemoryFormat::ChannelsLast));
  CHECK_FALSE(b->decode_head->bottleneck->conv->weight.is_contiguous());
  CHECK(b->backbone->patch_embed->proj->weight.is_contiguous());
  for (const auto& [k, v] : a->state_dict_mmseg()) CHECK(torch::equal(v, *find(b->state_dict_mmseg(), k)));

  torch::manual_seed(3);
  const auto x = torch::randn({2, 3, 96, 96});
  a->train();
  b->train();
  const auto oa = a->forward_train(x), ob = b->forward_train(x);
  CHECK(ob.logits.is_contiguous(at::MemoryFormat::ChannelsLast));
  const double scale = oa.logits.abs().max().item<double>();
  CHECK((oa.logits - ob.logits).abs().max().item<double>() <= 1e-5 * scale);
  CHECK((oa.aux - ob.aux).abs().max().item<double>() <= 1e-5 * oa.aux.abs().max().item<double>());
  (oa.logits.square().mean() + oa.aux.mean()).backward();
  (ob.logits.square().mean() + ob.aux.mean()).backward();
  const auto pa = a->named_params_mmseg(), pb = b->named_params_mmseg();
  REQUIRE(pa.size() == pb.size());
  double worst = 0;
  std::string where;
  for (size_t i = 0; i < pa.size(); ++i) {
    const auto& ga = pa[i].param.grad();
    const auto& gb = pb[i].param.grad();
    REQUIRE(ga.defined() == gb.defined());
    if (!ga.defined()) continue;
    const double d = (ga - gb).abs().max().item<double>() /
                     std::max(1e-3, ga.abs().max().item<double>());
    if (d > worst) worst = d, where = pa[i].name;
  }
  INFO("worst relative gradient difference " << worst << " at " << where);
  CHECK(worst <= 1e-4);
  const auto ba = a->norm_buffers(), bb = b->norm_buffers();
  for (size_t i = 0; i < ba.size(); ++i) CHECK(torch::allclose(ba[i], bb[i], 1e-5, 1e-6));

  // And back: NCHW storage again, the same weights (the statistics above differ by rounding).
  b->set_channels_last(false);
  CHECK(b->decode_head->bottleneck->conv->weight.is_contiguous());
  const auto pb2 = b->named_params_mmseg();
  for (size_t i = 0; i < pa.size(); ++i) CHECK(torch::equal(pa[i].param, pb2[i].param));
}
