#include "evax/segment/upernet.h"

#include <cmath>
#include <functional>
#include <map>
#include <set>

#include "evax/core/error.h"
#include "evax/core/registry.h"
#include "evax/io/weight_file.h"
#include "evax/models/registry.h"
#include "evax/train/run_checkpoint.h"

namespace F = torch::nn::functional;

namespace evax {
namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

std::string list_head(const std::vector<std::string>& v, size_t n) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < n; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > n) s += ", … (" + std::to_string(v.size()) + " in all)";
  return s;
}

// mmseg's resize(): bilinear, align_corners false.
torch::Tensor resize_to(const torch::Tensor& x, c10::IntArrayRef size) {
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>(size.begin(), size.end()))
                               .mode(torch::kBilinear)
                               .align_corners(false));
}

// BaseDecodeHead's conv_seg: mmcv Normal(std 0.01) init, bias 0.
torch::nn::Conv2d make_conv_seg(int64_t channels, int64_t out) {
  auto c = torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, out, 1));
  torch::NoGradGuard ng;
  torch::nn::init::normal_(c->weight, 0.0, 0.01);
  torch::nn::init::zeros_(c->bias);
  return c;
}

torch::nn::ConvTranspose2d conv_t(int64_t d) {
  // PyTorch's default init (kaiming_uniform a=√5), as EVA-X keeps it.
  return torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(d, d, 2).stride(2));
}

// Keys of EVA_X's VisionRotaryEmbeddingFast buffers (recomputed, never loaded).
bool is_rope_key(const std::string& k) {
  return starts_with(k, "backbone.") && k.find("rope.freqs_") != std::string::npos;
}

std::string strip_module(const std::string& k) {
  return starts_with(k, "module.") ? k.substr(7) : k;
}

// Backbone weights that are not part of the segmentation backbone (timm names after
// map_to_timm): the classifier's pooling norm and head, the MIM head and mask token.
const std::vector<std::string>& ignorable_backbone_keys() {
  static const std::vector<std::string> keys{"norm.", "fc_norm.", "head.", "mask_token",
                                             "lm_head."};
  return keys;
}

bool is_ignorable(const std::string& k) {
  for (const auto& d : ignorable_backbone_keys())
    if (d.back() == '.' ? starts_with(k, d) : k == d) return true;
  return false;
}

using OptionsFactory = std::function<UperNetOptions()>;

const Registry<OptionsFactory>& upernet_registry() {
  static const Registry<OptionsFactory> r = [] {
    Registry<OptionsFactory> reg("segmentation model");
    for (const char* size : {"tiny", "small", "base"}) {
      const std::string backbone = std::string("eva_x_") + size + "_patch16";
      reg.add("upernet_" + backbone, [backbone] { return UperNetOptions().backbone(backbone); });
    }
    return reg;
  }();
  return r;
}

}  // namespace

std::vector<std::string> upernet_model_names() { return upernet_registry().names(); }

UperNetOptions upernet_options(const std::string& name) { return upernet_registry().get(name)(); }

// --- ConvModule / heads --------------------------------------------------------------------------

ConvModuleImpl::ConvModuleImpl(int64_t in, int64_t out, int64_t kernel, int64_t padding) {
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                                                       .padding(padding)
                                                       .bias(false)));
  bn = register_module("bn", SyncBatchNorm2d(out));
  // mmcv ConvModule.init_weights: kaiming_init(mode fan_out, relu, normal); norm 1/0.
  torch::NoGradGuard ng;
  torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
}

torch::Tensor ConvModuleImpl::forward(const torch::Tensor& x) {
  return torch::relu(bn->forward(conv->forward(x)));
}

UPerHeadImpl::UPerHeadImpl(const std::vector<int64_t>& in_channels, int64_t channels,
                           const std::vector<int64_t>& pool_scales, int64_t out_channels,
                           double dropout_ratio) {
  EVAX_ASSERT(in_channels.size() >= 2, "UPerHead needs at least 2 levels");
  conv_seg = register_module("conv_seg", make_conv_seg(channels, out_channels));
  if (dropout_ratio > 0) dropout = register_module("dropout", torch::nn::Dropout2d(dropout_ratio));
  const int64_t top = in_channels.back();
  psp_modules = register_module("psp_modules", torch::nn::ModuleList());
  for (int64_t s : pool_scales)
    psp_modules->push_back(torch::nn::Sequential(torch::nn::AdaptiveAvgPool2d(s),
                                                 ConvModule(top, channels, 1, 0)));
  bottleneck = register_module(
      "bottleneck",
      ConvModule(top + static_cast<int64_t>(pool_scales.size()) * channels, channels, 3, 1));
  lateral_convs = register_module("lateral_convs", torch::nn::ModuleList());
  fpn_convs = register_module("fpn_convs", torch::nn::ModuleList());
  for (size_t i = 0; i + 1 < in_channels.size(); ++i) {
    lateral_convs->push_back(ConvModule(in_channels[i], channels, 1, 0));
    fpn_convs->push_back(ConvModule(channels, channels, 3, 1));
  }
  fpn_bottleneck = register_module(
      "fpn_bottleneck",
      ConvModule(static_cast<int64_t>(in_channels.size()) * channels, channels, 3, 1));
}

torch::Tensor UPerHeadImpl::forward(const std::vector<torch::Tensor>& inputs) {
  const size_t levels = lateral_convs->size() + 1;
  EVAX_ASSERT(inputs.size() == levels, "UPerHead expects ", levels, " maps, got ", inputs.size());
  std::vector<torch::Tensor> laterals;
  for (size_t i = 0; i + 1 < levels; ++i)
    laterals.push_back(lateral_convs[i]->as<ConvModuleImpl>()->forward(inputs[i]));
  // PPM on the coarsest level: the input and each pooled branch resized back, concatenated.
  const auto& top = inputs.back();
  std::vector<torch::Tensor> psp{top};
  for (const auto& m : *psp_modules)
    psp.push_back(
        resize_to(m->as<torch::nn::SequentialImpl>()->forward(top), top.sizes().slice(2)));
  laterals.push_back(bottleneck->forward(torch::cat(psp, 1)));
  // Top-down: each level gets the (already summed) coarser one added.
  for (size_t i = levels - 1; i > 0; --i)
    laterals[i - 1] = laterals[i - 1] + resize_to(laterals[i], laterals[i - 1].sizes().slice(2));
  std::vector<torch::Tensor> outs;
  for (size_t i = 0; i + 1 < levels; ++i)
    outs.push_back(fpn_convs[i]->as<ConvModuleImpl>()->forward(laterals[i]));
  outs.push_back(laterals.back());
  for (size_t i = levels - 1; i > 0; --i) outs[i] = resize_to(outs[i], outs[0].sizes().slice(2));
  auto feat = fpn_bottleneck->forward(torch::cat(outs, 1));
  if (dropout) feat = dropout->forward(feat);
  return conv_seg->forward(feat);
}

FCNHeadImpl::FCNHeadImpl(int64_t in_channels, int64_t channels, int64_t out_channels,
                         double dropout_ratio) {
  conv_seg = register_module("conv_seg", make_conv_seg(channels, out_channels));
  if (dropout_ratio > 0) dropout = register_module("dropout", torch::nn::Dropout2d(dropout_ratio));
  convs = register_module("convs", torch::nn::Sequential(ConvModule(in_channels, channels, 3, 1)));
}

torch::Tensor FCNHeadImpl::forward(const torch::Tensor& x) {
  auto feat = convs->forward(x);
  if (dropout) feat = dropout->forward(feat);
  return conv_seg->forward(feat);
}

// --- UperNet -------------------------------------------------------------------------------------

UperNetImpl::UperNetImpl(UperNetOptions o) : options_(std::move(o)) {
  const auto& op = options_;
  if (!starts_with(op.backbone(), "eva_x_"))
    raise<ConfigError>("UperNet backbone must be an EVA-X ViT (eva_x_tiny_patch16, "
                       "eva_x_small_patch16, eva_x_base_patch16), got '", op.backbone(), "'");
  ViTOptions vo = model_options(op.backbone());
  if (vo.patch_size() != 16)
    raise<ConfigError>("UperNet's simple pyramid needs 16 px patches, ", op.backbone(), " has ",
                       vo.patch_size());
  if (op.img_size() < 32 || op.img_size() % 16 != 0)
    raise<ConfigError>("UperNet img_size must be a multiple of 16 and >= 32, got ", op.img_size());
  if (op.depth() < 0) raise<ConfigError>("UperNet depth must be >= 0, got ", op.depth());
  if (op.depth() > 0) vo.depth(op.depth());
  const auto& idx = op.out_indices();
  if (idx.empty()) raise<ConfigError>("UperNet out_indices must not be empty");
  for (size_t i = 0; i < idx.size(); ++i)
    if (idx[i] < 0 || idx[i] >= vo.depth() || (i > 0 && idx[i] <= idx[i - 1]))
      raise<ConfigError>("UperNet out_indices must be strictly increasing block indices below "
                         "the depth ", vo.depth(), ", got ", str_cat(c10::IntArrayRef(idx)));
  if (!op.use_last_feat_only() && idx.size() != 4 && idx.size() != 1)
    raise<ConfigError>("UperNet out_indices must name 4 blocks (one per pyramid level) unless "
                       "use_last_feat_only, got ", idx.size());
  if (op.channels() < 1) raise<ConfigError>("UperNet channels must be >= 1, got ", op.channels());
  if (op.pool_scales().empty()) raise<ConfigError>("UperNet pool_scales must not be empty");
  for (int64_t s : op.pool_scales())
    if (s < 1) raise<ConfigError>("UperNet pool_scales must be >= 1, got ", s);
  if (op.dropout() < 0 || op.dropout() >= 1)
    raise<ConfigError>("UperNet dropout must be in [0, 1), got ", op.dropout());
  if (op.num_classes() < 1) raise<ConfigError>("UperNet num_classes must be >= 1");
  // mmseg: out_channels equals num_classes, except one sigmoid channel for 2 classes.
  if (op.out_channels() != op.num_classes() && !(op.out_channels() == 1 && op.num_classes() == 2))
    raise<ConfigError>("UperNet out_channels must equal num_classes, or be 1 for 2 classes; got ",
                       op.out_channels(), " for ", op.num_classes(), " classes");
  if (op.norm() != "bn" && op.norm() != "syncbn")
    raise<ConfigError>("UperNet norm must be bn or syncbn, got '", op.norm(), "'");
  if (op.drop_path_rate() < 0 || op.drop_path_rate() >= 1)
    raise<ConfigError>("UperNet drop_path_rate must be in [0, 1), got ", op.drop_path_rate());

  // The seg backbone has no final norm, pooling norm, head or MIM head (EVA_X); kToken pooling
  // without final_norm is the ViT layout that registers neither norm nor fc_norm.
  vo.img_size(op.img_size()).drop_path_rate(op.drop_path_rate()).num_classes(0).mim_dim(0);
  vo.final_norm(false).pool(PoolKind::kToken);
  backbone = register_module("backbone", VisionTransformer(vo));

  const int64_t d = vo.embed_dim();
  fpn1 = register_module("fpn1", torch::nn::Sequential(conv_t(d), SyncBatchNorm2d(d),
                                                       torch::nn::GELU(), conv_t(d)));
  fpn2 = register_module("fpn2", torch::nn::Sequential(conv_t(d)));
  fpn4 = register_module("fpn4", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
  decode_head = register_module(
      "decode_head", UPerHead(std::vector<int64_t>(4, d), op.channels(), op.pool_scales(),
                              op.out_channels(), op.dropout()));
  if (op.aux_head())
    auxiliary_head = register_module(
        "auxiliary_head", FCNHead(d, kUperNetAuxChannels, op.out_channels(), op.dropout()));
}

int64_t UperNetImpl::backbone_depth() const {
  return static_cast<int64_t>(backbone->blocks->size());
}

std::vector<torch::Tensor> UperNetImpl::forward_pyramid(const torch::Tensor& x) {
  std::vector<int64_t> idx = options_.out_indices();
  if (options_.use_last_feat_only()) idx = {idx.back()};
  auto tokens = backbone->forward_blocks(x, idx);  // validates the input shape
  const int64_t b = x.size(0), gh = x.size(2) / 16, gw = x.size(3) / 16;
  std::vector<torch::Tensor> maps;
  // (B, 1 + N, D) tokens viewed as (B, D, gh, gw) are already NHWC-strided: channels-last only
  // drops the cls token's gap, where NCHW has the convolutions transpose.
  for (const auto& t : tokens) {
    auto map = t.slice(1, 1).transpose(1, 2).reshape({b, t.size(2), gh, gw});
    maps.push_back(channels_last_ ? map.contiguous(at::MemoryFormat::ChannelsLast) : map);
  }
  if (maps.size() == 1) maps.assign(4, maps[0]);
  return {fpn1->forward(maps[0]), fpn2->forward(maps[1]), maps[2], fpn4->forward(maps[3])};
}

torch::Tensor UperNetImpl::forward(const torch::Tensor& x) {
  return decode_head->forward(forward_pyramid(x));
}

UperNetOutput UperNetImpl::forward_train(const torch::Tensor& x) {
  auto feats = forward_pyramid(x);
  UperNetOutput out;
  out.logits = decode_head->forward(feats);
  if (auxiliary_head) out.aux = auxiliary_head->forward(feats[2]);  // mmseg in_index 2
  return out;
}

void UperNetImpl::set_channels_last(bool on) {
  channels_last_ = on;
  const auto format = on ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  torch::NoGradGuard no_grad;
  for (auto& item : named_parameters()) {
    if (item.key().rfind("backbone.", 0) == 0) continue;  // the ViT's patch conv stays NCHW
    torch::Tensor& p = item.value();
    if (p.dim() == 4) p.set_data(p.data().contiguous(format));
  }
}

void UperNetImpl::set_comm(Comm* comm) {
  fpn1[1]->as<SyncBatchNorm2dImpl>()->set_comm(comm);
  if (options_.norm() != "syncbn") return;
  for (auto& m : modules(/*include_self=*/false))
    if (auto* bn = m->as<SyncBatchNorm2dImpl>()) bn->set_comm(comm);
}

// --- mmseg naming --------------------------------------------------------------------------------

TensorMap UperNetImpl::mmseg_entries(bool buffers) const {
  TensorMap out;
  TensorMap vit;  // backbone entries in timm naming, renamed together (the B layout is per map)
  std::vector<size_t> vit_pos;
  for (const auto& item : named_modules()) {
    const std::string prefix = item.key().empty() ? "" : item.key() + ".";
    auto add = [&](const std::string& name, const torch::Tensor& t) {
      const std::string full = prefix + name;
      if (starts_with(full, "backbone.")) {
        vit_pos.push_back(out.size());
        vit.emplace_back(full.substr(9), t);
        out.emplace_back("", t);
      } else {
        // The pyramid sits under `backbone.` in mmseg (EVA_X owns fpn1..fpn4).
        out.emplace_back(starts_with(full, "fpn") ? "backbone." + full : full, t);
      }
    };
    for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) add(p.key(), p.value());
    if (buffers)
      for (const auto& b : item.value()->named_buffers(/*recurse=*/false)) add(b.key(), b.value());
  }
  TensorMap renamed = map_timm_to_eva02(vit);
  EVAX_ASSERT(renamed.size() == vit_pos.size(), "backbone rename changed the key count");
  for (size_t i = 0; i < vit_pos.size(); ++i)
    out[vit_pos[i]].first = "backbone." + renamed[i].first;
  return out;
}

std::vector<NamedParam> UperNetImpl::named_params_mmseg() const {
  std::vector<NamedParam> out;
  for (auto& kv : mmseg_entries(/*buffers=*/false))
    if (kv.second.requires_grad()) out.push_back({kv.first, kv.second});
  return out;
}

std::vector<torch::Tensor> UperNetImpl::norm_buffers() const {
  std::vector<torch::Tensor> out;
  for (const auto& b : named_buffers(/*recurse=*/true)) out.push_back(b.value());
  return out;
}

TensorMap UperNetImpl::state_dict_mmseg() const {
  TensorMap entries = mmseg_entries(/*buffers=*/true);
  TensorMap out;
  torch::Tensor cos, sin;
  if (backbone->options().use_rope()) {
    // EVA_X's VisionRotaryEmbeddingFast table for the img_size grid: (G², head_dim) cos and sin,
    // the same layout as evax's rope_table ([sin | cos], row angles then column angles).
    const int64_t hd = backbone->options().embed_dim() / backbone->options().num_heads();
    auto table = backbone->rope_table(grid(), grid(), backbone->pos_embed.device())
                     .to(backbone->pos_embed.scalar_type());
    sin = table.slice(1, 0, hd);
    cos = table.slice(1, hd, 2 * hd);
  }
  for (auto& kv : entries) {
    out.emplace_back(kv.first, kv.second.detach());
    if (!cos.defined()) continue;
    // Module order of EVA_X: rope after patch_embed, each block's attn.rope after attn.proj.
    const std::string& k = kv.first;
    std::string rope_prefix;
    if (k == "backbone.patch_embed.proj.bias") {
      rope_prefix = "backbone.rope.";
    } else if (starts_with(k, "backbone.blocks.") && k.size() > 15 &&
               k.compare(k.size() - 15, 15, ".attn.proj.bias") == 0) {
      rope_prefix = k.substr(0, k.size() - 9) + "rope.";
    }
    if (!rope_prefix.empty()) {
      out.emplace_back(rope_prefix + "freqs_cos", cos);
      out.emplace_back(rope_prefix + "freqs_sin", sin);
    }
  }
  return out;
}

WeightLoadReport UperNetImpl::load_state_dict_mmseg(const TensorMap& sd, bool strict) {
  WeightLoadReport rep;
  rep.naming = WeightNaming::kEva02;
  rep.notes.push_back("mmseg UperNet naming");
  std::map<std::string, torch::Tensor> dst;
  std::vector<std::string> order;
  for (auto& kv : mmseg_entries(/*buffers=*/true)) {
    dst[kv.first] = kv.second;
    order.push_back(kv.first);
  }
  std::set<std::string> seen;
  std::vector<std::string> mismatched;
  size_t rope = 0, stripped = 0;
  torch::NoGradGuard ng;
  for (const auto& [key, tensor] : sd) {
    const std::string k = strip_module(key);
    stripped += k.size() != key.size();
    if (is_rope_key(k)) {
      ++rope;
      continue;
    }
    auto it = dst.find(k);
    if (it == dst.end()) {
      rep.unexpected.push_back(k);
      continue;
    }
    torch::Tensor src = tensor;
    torch::Tensor& target = it->second;
    if (k == "backbone.pos_embed" && src.dim() == 3 && src.sizes() != target.sizes() &&
        src.size(2) == target.size(2)) {
      const int64_t old_n = src.size(1) - 1, new_n = target.size(1) - 1;
      const auto og = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(old_n))));
      const auto ng_ = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(new_n))));
      if (og * og == old_n && ng_ * ng_ == new_n) {
        src = resample_pos_embed(src, og, og, ng_, ng_, 1);
        rep.notes.push_back(str_cat("pos_embed resampled from ", og, "x", og, " to ", ng_, "x",
                                    ng_, " (bicubic, cls kept)"));
      }
    }
    if (src.sizes() != target.sizes()) {
      mismatched.push_back(str_cat(k, ": checkpoint ", src.sizes(), " vs model ", target.sizes()));
      continue;
    }
    target.copy_(src.to(target.scalar_type()));
    seen.insert(k);
    ++rep.loaded;
  }
  for (const auto& k : order)
    if (!seen.count(k)) rep.missing.push_back(k);
  if (stripped) rep.notes.push_back("stripped the 'module.' prefix");
  if (rope) rep.notes.push_back(str_cat("ignored ", rope, " rope buffers (recomputed)"));

  if (!mismatched.empty())
    raise<DataError>("mmseg state dict does not fit the UperNet: size mismatch for ",
                     list_head(mismatched, 3));
  if (rep.loaded == 0)
    raise<DataError>("mmseg state dict does not fit the UperNet: none of its ", sd.size(),
                     " tensors matches a model key (unexpected: ", list_head(rep.unexpected, 4),
                     ")");
  if (strict && (!rep.missing.empty() || !rep.unexpected.empty())) {
    std::string what;
    if (!rep.missing.empty())
      what += str_cat(rep.missing.size(), " model keys missing [", list_head(rep.missing, 8), "]");
    if (!rep.unexpected.empty())
      what += str_cat(what.empty() ? "" : "; ", rep.unexpected.size(),
                      " checkpoint keys unexpected [", list_head(rep.unexpected, 8), "]");
    raise<DataError>("strict load failed (mmseg naming, ", rep.loaded, " tensors matched): ", what);
  }
  return rep;
}

WeightLoadReport UperNetImpl::load_backbone(const TensorMap& sd, bool strict) {
  // An mmseg state dict: its ViT part (EVA-02 names under `backbone.`, pyramid excluded).
  bool mmseg = false;
  for (const auto& kv : sd)
    if (starts_with(strip_module(kv.first), "backbone.")) mmseg = true;
  TensorMap vit;
  size_t skipped = 0;
  for (const auto& [key, t] : sd) {
    std::string k = strip_module(key);
    if (mmseg) {
      if (!starts_with(k, "backbone.") || starts_with(k, "backbone.fpn")) {
        ++skipped;
        continue;
      }
      k = k.substr(9);
    }
    vit.emplace_back(k, t);
  }
  WeightLoadReport rep =
      load_weights(*backbone, vit,
                   WeightLoadOptions().strict(strict).droppable(ignorable_backbone_keys()));
  if (mmseg)
    rep.notes.insert(rep.notes.begin(), str_cat("took the backbone of an mmseg state dict (",
                                                skipped, " pyramid/head tensors left out)"));
  // What the segmentation backbone never has is noted, not reported as unexpected.
  std::vector<std::string> ignored, unexpected, notes;
  for (const auto& k : rep.unexpected) (is_ignorable(k) ? ignored : unexpected).push_back(k);
  rep.unexpected = unexpected;
  for (const auto& n : rep.notes)  // load_weights' strict-mode list of the same keys
    if (!starts_with(n, "not loaded (droppable)")) notes.push_back(n);
  rep.notes = notes;
  if (!ignored.empty())
    rep.notes.push_back("ignored (no final norm, pooling, head or MIM head in the segmentation "
                        "backbone): " + list_head(ignored, 6));
  return rep;
}

WeightLoadReport UperNetImpl::load_backbone(const std::string& path, bool strict) {
  WeightFileContents contents = weight_file_read(path);
  TensorMap sd = weight_file_state_dict(contents);
  try {
    return load_backbone(sd, strict);
  } catch (const DataError& e) {
    raise<DataError>("backbone weights '", path, "': ", e.what());
  }
}

WeightLoadReport upernet_load_file(UperNetImpl& model, const std::string& path, bool strict) {
  const std::string file = run_weights_path(path);
  WeightFileContents contents = weight_file_read(file);
  std::string key;
  TensorMap sd = weight_file_state_dict(contents, &key);
  bool segmentor = false;
  for (const auto& kv : sd)
    if (starts_with(strip_module(kv.first), "decode_head.")) segmentor = true;
  try {
    WeightLoadReport rep = segmentor ? model.load_state_dict_mmseg(sd, strict)
                                     : model.load_backbone(sd, strict);
    if (!key.empty()) rep.notes.insert(rep.notes.begin(), "weights under '" + key + "'");
    return rep;
  } catch (const DataError& e) {
    raise<DataError>("checkpoint '", file, "' into the UperNet (",
                     segmentor ? "segmentation checkpoint" : "backbone weights", "): ", e.what());
  }
}

}  // namespace evax
