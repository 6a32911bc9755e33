#include "evax/models/load.h"

#include "evax/io/checkpoint.h"

namespace evax {

LoadedModel model_load(const std::string& name, const std::string& checkpoint,
                       int64_t num_classes, int64_t img_size, const WeightLoadOptions& opts) {
  LoadedModel out;
  out.model = model_create(name, num_classes, img_size);
  if (checkpoint.empty()) return out;
  CheckpointContents contents = checkpoint_read(checkpoint);
  TensorMap sd = checkpoint_state_dict(contents, &out.checkpoint_key);
  try {
    out.report = load_weights(*out.model, sd, opts);
  } catch (const DataError& e) {
    raise<DataError>("checkpoint '", checkpoint, "' into ", name, ": ", e.what());
  }
  return out;
}

}  // namespace evax
