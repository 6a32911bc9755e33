#include "evax/explain/cam.h"

#include <cmath>
#include <filesystem>

#include "evax/core/error.h"
#include "evax/core/strings.h"
#include "evax/data/preprocess.h"
#include "evax/data/transforms.h"
#include "evax/io/weight_file.h"
#include "evax/models/load.h"
#include "evax/train/run_checkpoint.h"
#include "evax/train/runtime.h"

namespace fs = std::filesystem;

namespace evax {

LoadedClassifier cam_classifier_load(const std::string& checkpoint, const std::string& model,
                                     const std::string& device, int64_t img_size) {
  const std::string weights = run_weights_path(checkpoint);
  const bool has_meta = fs::exists(fs::path(weights).parent_path() / "meta.json");
  if (has_meta) {
    LoadedClassifier c = classifier_load(checkpoint, device);
    if (!model.empty() && model != c.spec.model)
      raise<UsageError>("--model ", model, " contradicts '", c.weights, "', whose meta.json "
                        "records a ", c.spec.model, " classifier (leave --model out)");
    return c;
  }
  if (model.empty())
    raise<DataError>("'", weights, "' has no meta.json beside it (not written by evax finetune): "
                     "give --model NAME, and --class INDEX to choose a class");
  if (img_size < 0 || img_size % 16)
    raise<ConfigError>("input size must be a positive multiple of 16, got ", img_size);
  const InputSpec in = model_input_spec(model);
  const TensorMap sd = weight_file_state_dict(weight_file_read(weights));
  const at::Tensor* head = find(sd, "head.weight");
  if (!head || head->dim() != 2)
    raise<DataError>("'", weights, "' has no classifier head (`head.weight`): Grad-CAM explains "
                     "a class logit, so it needs a finetuned classifier");
  LoadedClassifier c;
  c.weights = weights;
  c.spec.model = model;
  c.spec.depth = 0;
  c.spec.img_size = img_size > 0 ? img_size : in.size;
  for (int64_t k = 0; k < head->size(0); ++k) c.spec.classes.push_back(std::to_string(k));
  c.spec.multiclass = false;
  c.spec.crop_pct = eval_crop_pct(c.spec.img_size);
  c.spec.mean = in.mean;
  c.spec.std = in.std;
  LoadedModel lm = model_load(model, weights, head->size(0), c.spec.img_size,
                              WeightLoadOptions().strict(true).drop_mismatched_head(false));
  c.model = lm.model;
  c.device = select_device(device, 0);
  c.model->to(c.device);
  c.model->eval();
  return c;
}

int64_t cam_input_size(const ClassifierSpec& spec, const CamInputOptions& o) {
  const int64_t s = o.size() > 0 ? o.size() : spec.img_size;
  if (s <= 0 || s % 16)
    raise<ConfigError>("Grad-CAM input size must be a positive multiple of 16, got ", s);
  return s;
}

torch::Tensor cam_input(const cv::Mat& unit, const ClassifierSpec& spec, const CamInputOptions& o) {
  const int64_t s = cam_input_size(spec, o);
  const double mean = std::isnan(o.mean()) ? spec.mean : o.mean();
  const double sd = std::isnan(o.std()) ? spec.std : o.std();
  if (!(sd > 0)) raise<ConfigError>("normalisation std must be > 0, got ", sd);
  Interp interp;
  if (o.resize() == "bicubic") interp = Interp::kBicubic;
  else if (o.resize() == "bilinear") interp = Interp::kBilinear;
  else raise<ConfigError>("resize '", o.resize(), "' is unknown; valid: bicubic, bilinear");
  if (o.crop()) return eval_transform(unit, s, spec.crop_pct, mean, sd);
  auto t = resize(unit_to_tensor(unit), s, s, interp);
  return normalize(t, mean, sd, 3).contiguous();
}

std::optional<int64_t> box_class_index(const ClassifierSpec& spec, const std::string& label) {
  auto alias = [](const std::string& n) -> std::string {
    if (n == "Infiltrate") return "Infiltration";
    if (n == "Infiltration") return "Infiltrate";
    return n;
  };
  for (size_t k = 0; k < spec.classes.size(); ++k)
    if (spec.classes[k] == label) return static_cast<int64_t>(k);
  for (size_t k = 0; k < spec.classes.size(); ++k)
    if (spec.classes[k] == alias(label)) return static_cast<int64_t>(k);
  return std::nullopt;
}

int64_t cam_class_index(const ClassifierSpec& spec, const std::string& name_or_index) {
  if (auto k = box_class_index(spec, name_or_index)) return *k;
  const std::string& s = name_or_index;
  const bool digits = !s.empty() && s.size() < 10 &&
                      s.find_first_not_of("0123456789") == std::string::npos;
  if (digits) {
    const int64_t k = std::stoll(s);
    if (k < static_cast<int64_t>(spec.classes.size())) return k;
  }
  raise<ConfigError>("--class '", s, "' is neither a class of the checkpoint nor an index in [0, ",
                     spec.classes.size() - 1, "]; classes: ", join_with(spec.classes));
}

namespace {
GradCamResult to_cpu(GradCamResult r) {
  r.maps = r.maps.cpu();
  r.logits = r.logits.cpu();
  r.classes = r.classes.cpu();
  return r;
}
}  // namespace

GradCamResult cam_units(const LoadedClassifier& c, const std::vector<cv::Mat>& units,
                        const std::vector<int64_t>& classes, const CamInputOptions& in,
                        const GradCamOptions& cam) {
  EVAX_ASSERT(!units.empty(), "cam_units: no images");
  std::vector<torch::Tensor> xs;
  xs.reserve(units.size());
  for (const auto& u : units) xs.push_back(cam_input(u, c.spec, in));
  auto x = torch::stack(xs).to(c.device);
  return to_cpu(grad_cam(*c.model.ptr(), x, classes, cam));
}

GradCamResult cam_pixels(const LoadedClassifier& c, const torch::Tensor& pixels,
                         const std::vector<int64_t>& classes, const GradCamOptions& cam,
                         int64_t batch) {
  EVAX_ASSERT(batch >= 1, "batch ", batch);
  const int64_t n = pixels.dim() > 0 ? pixels.size(0) : 0;
  if (n == 0) raise<ConfigError>("Grad-CAM: no images given");
  if (classes.size() > 1 && static_cast<int64_t>(classes.size()) != n)
    raise<ConfigError>("Grad-CAM: ", classes.size(), " classes given for ", n, " images");
  std::vector<torch::Tensor> maps, logits, cls;
  for (int64_t i = 0; i < n; i += batch) {
    const int64_t e = std::min(n, i + batch);
    std::vector<int64_t> part;
    if (classes.size() == 1) part = classes;
    else if (!classes.empty()) part.assign(classes.begin() + i, classes.begin() + e);
    auto x = pixels.slice(0, i, e).to(c.device, torch::kFloat32);
    GradCamResult r = to_cpu(grad_cam(*c.model.ptr(), x, part, cam));
    maps.push_back(r.maps), logits.push_back(r.logits), cls.push_back(r.classes);
  }
  GradCamResult out;
  out.maps = torch::cat(maps);
  out.logits = torch::cat(logits);
  out.classes = torch::cat(cls);
  return out;
}

torch::Tensor cam_class_scores(const ClassifierSpec& spec, const torch::Tensor& logits,
                               const torch::Tensor& classes) {
  auto l = logits.to(torch::kFloat32);
  auto p = spec.multiclass ? torch::softmax(l, 1) : torch::sigmoid(l);
  return p.gather(1, classes.to(p.device()).unsqueeze(1)).squeeze(1);
}

}  // namespace evax
