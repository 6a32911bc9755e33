#include "evax/models/load.h"

#include "evax/io/weight_file.h"

namespace evax {

WeightLoadReport load_checkpoint_into(VisionTransformerImpl& model, const std::string& checkpoint,
                                      const std::string& what, const WeightLoadOptions& opts,
                                      std::string* checkpoint_key) {
  WeightFileContents contents = weight_file_read(checkpoint);
  TensorMap sd = weight_file_state_dict(contents, checkpoint_key);
  try {
    return load_weights(model, sd, opts);
  } catch (const DataError& e) {
    raise<DataError>("checkpoint '", checkpoint, "' into ", what, ": ", e.what());
  }
}

LoadedModel model_load(const std::string& name, const std::string& checkpoint,
                       int64_t num_classes, int64_t img_size, const WeightLoadOptions& opts) {
  LoadedModel out;
  out.model = model_create(name, num_classes, img_size);
  if (checkpoint.empty()) return out;
  out.report = load_checkpoint_into(*out.model, checkpoint, name, opts, &out.checkpoint_key);
  return out;
}

}  // namespace evax
