#include "evax/classify/predict.h"

#include <algorithm>
#include <filesystem>

#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/data/preprocess.h"
#include "evax/io/image.h"
#include "evax/models/load.h"
#include "evax/train/autocast.h"
#include "evax/train/runtime.h"

namespace fs = std::filesystem;

namespace evax {

LoadedClassifier classifier_load(const std::string& checkpoint, const std::string& device) {
  LoadedClassifier c;
  c.weights = run_weights_path(checkpoint);
  c.spec = ClassifierSpec::from_json(checkpoint_task_meta(c.weights, "evax predict"),
                                     c.weights);
  c.model = classifier_build(ClassifierOptions()
                                 .model(c.spec.model)
                                 .depth(c.spec.depth)
                                 .img_size(c.spec.img_size)
                                 .num_classes(static_cast<int64_t>(c.spec.classes.size()))
                                 .drop_path(0));
  load_checkpoint_into(*c.model, c.weights, "classifier " + c.spec.model,
                       WeightLoadOptions().strict(true).drop_mismatched_head(false));
  c.device = select_device(device, 0);
  c.model->to(c.device);
  c.model->eval();
  return c;
}

std::vector<std::string> collect_images(const std::vector<std::string>& inputs) {
  std::vector<std::string> out;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (!fs::exists(in, ec)) raise<DataError>("input '", in, "' does not exist");
    if (!fs::is_directory(in, ec)) {
      out.push_back(in);
      continue;
    }
    std::vector<std::string> found;
    for (auto it = fs::recursive_directory_iterator(in, ec); it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (!name.empty() && name[0] == '.') {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (!it->is_regular_file()) continue;
      std::string ext = it->path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
      if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".dcm") found.push_back(it->path().string());
    }
    if (found.empty()) raise<DataError>("folder '", in, "' holds no .png, .jpg, .jpeg or .dcm image");
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

torch::Tensor classifier_predict(LoadedClassifier& c, const std::vector<std::string>& paths,
                                 int64_t batch) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> outs;
  for (size_t start = 0; start < paths.size(); start += static_cast<size_t>(batch)) {
    std::vector<torch::Tensor> xs;
    for (size_t i = start; i < std::min(paths.size(), start + static_cast<size_t>(batch)); ++i)
      xs.push_back(eval_transform(image_read_unit(paths[i], {}), c.spec.img_size, c.spec.crop_pct,
                                  c.spec.mean, c.spec.std));
    auto x = torch::stack(xs).to(c.device);
    torch::Tensor logits;
    {
      Autocast ac(c.device.is_cuda(), c.device.type());
      logits = c.model->forward(x).to(torch::kFloat32);
    }
    outs.push_back((c.spec.multiclass ? torch::softmax(logits, 1) : torch::sigmoid(logits)).cpu());
  }
  if (outs.empty()) return torch::zeros({0, static_cast<int64_t>(c.spec.classes.size())});
  return torch::cat(outs);
}

}  // namespace evax
