#include "evax/models/registry.h"

namespace evax {
namespace {

using OptionsFactory = std::function<ViTOptions()>;

ViTOptions eva_x(int64_t dim, int64_t heads) {
  ViTOptions o;
  o.embed_dim(dim).num_heads(heads).depth(12).patch_size(16).img_size(224);
  o.mlp_ratio(4.0 * 2.0 / 3.0).mlp(MlpKind::kSwiGluPacked).qkv_fused(true).eva_qv_bias(true);
  o.use_rope(true).rope_ref_grid(14).pool(PoolKind::kAvg).final_norm(false);
  return o;
}

// timm VisionTransformer: qkv bias, GELU MLP ×4, final norm, cls-token pooling.
ViTOptions plain_vit(int64_t dim, int64_t heads, int64_t depth, int64_t img) {
  ViTOptions o;
  o.embed_dim(dim).num_heads(heads).depth(depth).patch_size(16).img_size(img);
  o.mlp_ratio(4.0).mlp(MlpKind::kGelu).qkv_fused(true).eva_qv_bias(false);
  o.use_rope(false).pool(PoolKind::kToken).final_norm(true).head_init_scale(1.0);
  return o;
}

const Registry<OptionsFactory>& registry() {
  static const Registry<OptionsFactory> r = [] {
    Registry<OptionsFactory> reg("model");
    reg.add("eva_x_tiny_patch16", [] { return eva_x(192, 3); });
    reg.add("eva_x_small_patch16", [] { return eva_x(384, 6); });
    reg.add("eva_x_base_patch16", [] {
      return eva_x(768, 12).qkv_fused(false).mlp(MlpKind::kSwiGluSubLn);
    });
    // MGCA's image encoder is a BLIP-style ViT-B/16 with exactly timm's ViT-B layout.
    reg.add("mgca_vit_base_patch16", [] { return plain_vit(768, 12, 12, 224); });
    struct Size {
      const char* name;
      int64_t dim, heads, depth;
    };
    for (Size s : {Size{"tiny", 192, 3, 12}, Size{"small", 384, 6, 12}, Size{"base", 768, 12, 12},
                   Size{"large", 1024, 16, 24}}) {
      for (int64_t img : {224, 384}) {
        reg.add(std::string("vit_") + s.name + "_patch16_" + std::to_string(img),
                [s, img] { return plain_vit(s.dim, s.heads, s.depth, img); });
      }
    }
    return reg;
  }();
  return r;
}

}  // namespace

ViTOptions model_options(const std::string& name) { return registry().get(name)(); }

InputSpec model_input_spec(const std::string& name) {
  ViTOptions o = model_options(name);  // validates the name
  InputSpec spec;
  spec.size = o.img_size();
  if (name.rfind("eva_x_", 0) != 0) spec.mean = 0.5, spec.std = 0.5;
  return spec;
}

std::vector<std::string> model_names() { return registry().names(); }

VisionTransformer model_create(const std::string& name, int64_t num_classes, int64_t img_size) {
  ViTOptions o = model_options(name);
  o.num_classes(num_classes);
  if (img_size > 0) {
    if (img_size % o.patch_size() != 0)
      raise<ConfigError>("image size ", img_size, " is not a multiple of the patch size ",
                         o.patch_size());
    o.img_size(img_size);
  }
  return VisionTransformer(o);
}

}  // namespace evax
