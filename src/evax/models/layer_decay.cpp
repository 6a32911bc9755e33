#include "evax/models/layer_decay.h"

#include <cmath>

#include "evax/core/error.h"

namespace evax {

int64_t vit_layer_id(const std::string& name, int64_t depth) {
  const int64_t num_layers = depth + 1;
  if (name == "cls_token" || name == "pos_embed") return 0;
  if (name.rfind("patch_embed", 0) == 0) return 0;
  if (name.rfind("blocks", 0) == 0) {
    // int(name.split('.')[1]) + 1
    const size_t a = name.find('.');
    const size_t b = a == std::string::npos ? a : name.find('.', a + 1);
    EVAX_ASSERT(a != std::string::npos, "vit_layer_id: no block index in '", name, "'");
    return std::stoll(name.substr(a + 1, b == std::string::npos ? b : b - a - 1)) + 1;
  }
  return num_layers;
}

double vit_layer_decay_scale(const std::string& name, int64_t depth, double layer_decay) {
  // layer_scales[i] = layer_decay ** (num_layers - i): Python's float ** int is pow().
  const int64_t num_layers = depth + 1;
  return std::pow(layer_decay, static_cast<double>(num_layers - vit_layer_id(name, depth)));
}

bool eva_x_finetune_no_weight_decay(const std::string& name, const torch::Tensor& p) {
  return p.dim() == 1 || name == "pos_embed" || name == "cls_token";
}

}  // namespace evax
