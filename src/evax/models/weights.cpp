#include "evax/models/weights.h"

#include <cmath>
#include <map>
#include <set>

#include "evax/core/error.h"

namespace evax {
namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// Replaces the dotted component sequence `from` by `to` when it occurs as whole components.
bool replace_component(std::string* key, const std::string& from, const std::string& to) {
  const std::string k = "." + *key + ".";
  auto pos = k.find("." + from + ".");
  if (pos == std::string::npos) return false;
  std::string r = k.substr(0, pos + 1) + to + k.substr(pos + 1 + from.size());
  *key = r.substr(1, r.size() - 2);
  return true;
}

std::string list_head(const std::vector<std::string>& v, size_t n = 6) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < n; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > n) s += ", … (" + std::to_string(v.size()) + " in all)";
  return s;
}

// Whether `key` is covered by a droppable entry ("x." = prefix, else exact).
bool is_droppable(const std::string& key, const std::vector<std::string>& droppable) {
  for (const auto& d : droppable)
    if (!d.empty() && (d.back() == '.' ? starts_with(key, d) : key == d)) return true;
  return false;
}

}  // namespace

const char* weight_naming_name(WeightNaming n) {
  switch (n) {
    case WeightNaming::kTimm: return "timm";
    case WeightNaming::kEva02: return "eva02";
    case WeightNaming::kMgca: return "mgca";
  }
  return "?";
}

WeightNaming weight_naming_from_string(const std::string& s) {
  if (s == "timm") return WeightNaming::kTimm;
  if (s == "evax" || s == "eva02") return WeightNaming::kEva02;
  raise<ConfigError>("unknown weight naming '", s, "' (valid: timm, evax)");
}

WeightNaming detect_naming(const TensorMap& sd) {
  bool mgca = false, eva02 = false, q_bias = false, q_proj_w = false;
  for (const auto& kv : sd) {
    const std::string& k = kv.first;
    if (starts_with(k, "img_encoder_q.model.")) mgca = true;
    if (k.find("mlp.w12.") != std::string::npos || k.find("mlp.w1.") != std::string::npos ||
        k.find("mlp.w3.") != std::string::npos || k.find("mlp.ffn_ln.") != std::string::npos ||
        k.find("rope.freqs_") != std::string::npos)
      eva02 = true;
    if (ends_with(k, "attn.q_bias")) q_bias = true;
    if (ends_with(k, "attn.q_proj.weight")) q_proj_w = true;
  }
  if (mgca) return WeightNaming::kMgca;
  // asuka B keeps q_bias next to a bias-free q_proj; timm's B folds it into q_proj.bias.
  if (eva02 || (q_bias && q_proj_w)) return WeightNaming::kEva02;
  return WeightNaming::kTimm;
}

TensorMap map_to_timm(const TensorMap& sd, WeightNaming naming, const VisionTransformerImpl* model,
                      std::vector<std::string>* notes, bool keep_mim) {
  TensorMap out;
  auto note = [notes](const std::string& s) {
    if (notes) notes->push_back(s);
  };
  if (naming == WeightNaming::kMgca) {
    const std::string prefix = "img_encoder_q.model.";
    size_t dropped = 0;
    for (const auto& kv : sd) {
      if (starts_with(kv.first, prefix))
        out.emplace_back(kv.first.substr(prefix.size()), kv.second);
      else
        ++dropped;
    }
    note("MGCA: kept the image backbone under '" + prefix + "', dropped " +
         std::to_string(dropped) + " other tensors (text encoder, projections)");
    return out;
  }
  if (naming == WeightNaming::kTimm) return sd;

  const bool split_qkv = [&] {
    for (const auto& kv : sd)
      if (ends_with(kv.first, "attn.q_proj.weight")) return true;
    return false;
  }();
  const bool mim_weights = contains(sd, "mask_token");
  const bool model_mim = keep_mim || (model != nullptr && model->mask_token.defined());
  const bool model_fc_norm = model == nullptr || static_cast<bool>(model->fc_norm);
  size_t rope = 0, mim_dropped = 0;
  bool norm_moved = false;
  for (const auto& kv : sd) {
    std::string k = kv.first;
    if (k.find("rope") != std::string::npos) {  // recomputed, never loaded
      ++rope;
      continue;
    }
    replace_component(&k, "mlp.ffn_ln", "mlp.norm");
    replace_component(&k, "attn.inner_attn_ln", "attn.norm");
    replace_component(&k, "mlp.w12", "mlp.fc1") || replace_component(&k, "mlp.w1", "mlp.fc1_g");
    replace_component(&k, "mlp.w2", "mlp.fc1_x");
    replace_component(&k, "mlp.w3", "mlp.fc2");
    if (split_qkv) {
      replace_component(&k, "attn.q_bias", "attn.q_proj.bias");
      replace_component(&k, "attn.v_bias", "attn.v_proj.bias");
    }
    if (mim_weights && !model_mim) {
      if (k == "mask_token" || starts_with(k, "lm_head.")) {
        ++mim_dropped;
        continue;
      }
      if ((k == "norm.weight" || k == "norm.bias") && model_fc_norm) {
        k = "fc_" + k;
        norm_moved = true;
      }
    }
    out.emplace_back(k, kv.second);
  }
  note("EVA-02 naming: renamed mlp.w12/w1/w2/w3/ffn_ln" +
       std::string(split_qkv ? " and q_bias/v_bias → q_proj/v_proj.bias" : "") + " to timm keys");
  if (rope) note("dropped " + std::to_string(rope) + " rope buffers (recomputed)");
  if (mim_dropped) note("MIM checkpoint: dropped mask_token and lm_head (" +
                        std::to_string(mim_dropped) + " tensors)");
  if (norm_moved) note("MIM checkpoint: final norm.* loaded as fc_norm.*");
  return out;
}

WeightLoadReport load_weights(VisionTransformerImpl& model, const TensorMap& sd,
                              const WeightLoadOptions& opts) {
  WeightLoadReport rep;
  rep.naming = detect_naming(sd);
  TensorMap mapped = map_to_timm(sd, rep.naming, &model, &rep.notes);

  std::map<std::string, torch::Tensor> dst;
  std::vector<std::string> order;
  for (const auto& p : model.named_parameters(true)) dst[p.key()] = p.value(), order.push_back(p.key());
  for (const auto& b : model.named_buffers(true)) dst[b.key()] = b.value(), order.push_back(b.key());

  std::set<std::string> seen;
  std::vector<std::string> mismatched;
  torch::NoGradGuard ng;
  for (auto& kv : mapped) {
    const std::string& k = kv.first;
    auto it = dst.find(k);
    if (it == dst.end()) {
      rep.unexpected.push_back(k);
      continue;
    }
    torch::Tensor src = kv.second;
    torch::Tensor& target = it->second;
    if (k == "pos_embed" && src.dim() == 3 && src.sizes() != target.sizes() &&
        opts.resample_pos_embed() && src.size(2) == target.size(2)) {
      const int64_t old_n = src.size(1) - 1, new_n = target.size(1) - 1;
      const int64_t og = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(old_n))));
      const int64_t ng_ = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(new_n))));
      if (og * og == old_n && ng_ * ng_ == new_n) {
        src = resample_pos_embed(src, og, og, ng_, ng_, 1);
        rep.notes.push_back("pos_embed resampled from " + std::to_string(og) + "x" +
                            std::to_string(og) + " to " + std::to_string(ng_) + "x" +
                            std::to_string(ng_) + " (bicubic, cls kept)");
      }
    }
    if (src.sizes() != target.sizes()) {
      if (opts.drop_mismatched_head() && starts_with(k, "head.")) {
        rep.notes.push_back("dropped " + k + " of shape " + str_cat(src.sizes()) +
                            " (model head is " + str_cat(target.sizes()) + ")");
        continue;
      }
      if (is_droppable(k, opts.droppable())) {
        rep.notes.push_back("skipped " + k + " of shape " + str_cat(src.sizes()) + " (model: " +
                            str_cat(target.sizes()) + "; droppable, keeps its initialisation)");
        continue;
      }
      mismatched.push_back(k + ": checkpoint " + str_cat(src.sizes()) + " vs model " +
                           str_cat(target.sizes()));
      continue;
    }
    target.copy_(src.to(target.scalar_type()));
    seen.insert(k);
    ++rep.loaded;
  }
  for (const auto& k : order)
    if (!seen.count(k)) rep.missing.push_back(k);

  if (!mismatched.empty())
    raise<DataError>("checkpoint does not fit the model (", weight_naming_name(rep.naming),
                     " naming): size mismatch for ", list_head(mismatched, 3));
  if (rep.loaded == 0)
    raise<DataError>("checkpoint does not fit the model: none of its ", mapped.size(),
                     " tensors matches a model key (", weight_naming_name(rep.naming),
                     " naming; unexpected: ", list_head(rep.unexpected, 4), ")");
  if (opts.strict()) {
    std::vector<std::string> missing, unexpected, dropped;
    for (const auto& k : rep.missing)
      (is_droppable(k, opts.droppable()) ? dropped : missing).push_back(k);
    for (const auto& k : rep.unexpected)
      (is_droppable(k, opts.droppable()) ? dropped : unexpected).push_back(k);
    if (!missing.empty() || !unexpected.empty()) {
      std::string what;
      if (!missing.empty())
        what += std::to_string(missing.size()) + " model keys missing [" + list_head(missing, 8) + "]";
      if (!unexpected.empty())
        what += std::string(what.empty() ? "" : "; ") + std::to_string(unexpected.size()) +
                " checkpoint keys unexpected [" + list_head(unexpected, 8) + "]";
      raise<DataError>("strict load failed (", weight_naming_name(rep.naming), " naming, ",
                       rep.loaded, " tensors matched): ", what);
    }
    if (!dropped.empty())
      rep.notes.push_back("not loaded (droppable): " + list_head(dropped));
  }
  return rep;
}

std::string guess_architecture(const TensorMap& sd) {
  const at::Tensor* cls = find(sd, "cls_token");
  if (!cls || cls->dim() != 3) return "";
  const int64_t d = cls->size(2);
  int64_t depth = 0;
  for (const auto& kv : sd) {
    if (!starts_with(kv.first, "blocks.")) continue;
    depth = std::max<int64_t>(depth, std::atoll(kv.first.c_str() + 7) + 1);
  }
  const bool eva = contains(sd, "blocks.0.attn.q_bias") || contains(sd, "blocks.0.attn.q_proj.weight");
  const at::Tensor* pos = find(sd, "pos_embed");
  int64_t img = 224;
  if (pos && pos->dim() == 3) {
    const int64_t g = static_cast<int64_t>(std::llround(std::sqrt(double(pos->size(1) - 1))));
    img = g * 16;
  }
  if (eva && depth == 12) {
    if (d == 192) return "eva_x_tiny_patch16";
    if (d == 384) return "eva_x_small_patch16";
    if (d == 768) return "eva_x_base_patch16";
    return "";
  }
  const std::string size = d == 192 ? "tiny" : d == 384 ? "small" : d == 768 ? "base"
                         : d == 1024 ? "large" : "";
  if (size.empty() || (img != 224 && img != 384)) return "";
  if (d == 768 && depth == 12 && img == 224) return "mgca_vit_base_patch16 (= vit_base_patch16_224)";
  return "vit_" + size + "_patch16_" + std::to_string(img);
}

std::string WeightLoadReport::summary() const {
  std::string s = "loaded " + std::to_string(loaded) + " tensors (" + weight_naming_name(naming) +
                  " naming)";
  for (const auto& n : notes) s += "; " + n;
  if (!missing.empty()) s += "; missing: " + list_head(missing);
  if (!unexpected.empty()) s += "; unexpected: " + list_head(unexpected);
  return s;
}

TensorMap state_dict_timm(const VisionTransformerImpl& model) {
  TensorMap out;
  for (const auto& p : model.named_parameters(true)) out.emplace_back(p.key(), p.value());
  return out;
}

TensorMap map_timm_to_eva02(const TensorMap& sd) {
  const bool split_qkv = [&] {
    for (const auto& kv : sd)
      if (ends_with(kv.first, "attn.q_proj.weight")) return true;
    return false;
  }();
  TensorMap out;
  for (const auto& kv : sd) {
    std::string k = kv.first;
    replace_component(&k, "mlp.fc1_g", "mlp.w1") || replace_component(&k, "mlp.fc1_x", "mlp.w2") ||
        replace_component(&k, "mlp.fc1", "mlp.w12");
    replace_component(&k, "mlp.fc2", "mlp.w3");
    replace_component(&k, "mlp.norm", "mlp.ffn_ln");
    if (split_qkv) {
      replace_component(&k, "attn.q_proj.bias", "attn.q_bias");
      replace_component(&k, "attn.v_proj.bias", "attn.v_bias");
    }
    out.emplace_back(k, kv.second);
  }
  return out;
}

}  // namespace evax
