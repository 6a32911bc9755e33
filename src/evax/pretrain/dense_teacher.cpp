#include "evax/pretrain/dense_teacher.h"

#include "evax/core/log.h"
#include "evax/data/transforms.h"
#include "evax/io/image.h"
#include "evax/models/registry.h"
#include "evax/models/weights.h"
#include "evax/train/autocast.h"
#include "evax/train/runtime.h"

namespace F = torch::nn::functional;

namespace evax {

DenseTeacherOptions dense_teacher_options_from_config(Config& cfg) {
  DenseTeacherOptions o;
  auto m = cfg.view("model");
  o.model = m.get<std::string>("name", o.model, "registered architecture trained as the teacher");
  const ViTOptions v = model_options(o.model);
  m.check("name", v.pool() == PoolKind::kToken && v.final_norm(),
          "must be a plain ViT (cls token, final norm), e.g. vit_tiny_patch16_224");
  o.depth = m.get<int64_t>(
      "depth", o.depth, "number of blocks, overriding the architecture's (small teachers)");
  m.check("depth", o.depth >= 0, "must be >= 0 (0 = the model's own depth)");
  auto d = cfg.view("data");
  o.manifest = d.require<std::string>(
      "manifest",
      "manifest CSV whose mask column gives each image's bit mask (synth's masks/findings)");
  o.split = d.get<std::string>("split", o.split, "manifest split trained on (all = every row)");
  d.check("split", o.split == "train" || o.split == "val" || o.split == "test" || o.split == "all",
          "must be train, val, test or all");
  o.img_size = d.get<int64_t>(
      "img_size", o.img_size,
      "input side in pixels: the data.views.teacher_size of the pretraining it will serve");
  d.check("img_size", o.img_size >= 16 && o.img_size % 16 == 0, "must be a positive multiple of 16");
  o.num_bits = d.get<int64_t>(
      "num_bits", o.num_bits, "lowest mask bits trained on, one per finding: the outputs of each patch token");
  d.check("num_bits", o.num_bits >= 1 && o.num_bits <= 8, "must be in [1, 8] (8-bit masks)");
  o.flip_p = d.get<double>("flip_p", o.flip_p,
                           "probability of a horizontal flip of image and mask together");
  d.check("flip_p", o.flip_p >= 0 && o.flip_p <= 1, "must be in [0, 1]");
  o.loader = loader_options_from_config(d.at("loader"));
  if (!d.has("loader.drop_last_batch")) o.loader.drop_last_batch = true;
  o.pos_weight = cfg.get<double>(
      "loss.pos_weight", o.pos_weight,
      "weight of the positive term of the per-patch BCE; above 1 keeps rare findings from being "
      "ignored");
  cfg.check("loss.pos_weight", o.pos_weight > 0, "must be > 0");
  read_run_keys(cfg, o);
  return o;
}

torch::Tensor DenseTeacherTask::patch_targets(const torch::Tensor& mask, int64_t patch,
                                              int64_t bits) {
  auto m = mask.to(torch::kInt32).squeeze(0);  // (H, W)
  std::vector<torch::Tensor> planes;
  for (int64_t b = 0; b < bits; ++b)
    planes.push_back(torch::bitwise_and(m, 1 << b).ne(0).to(torch::kFloat32));
  auto x = torch::stack(planes).unsqueeze(0);  // (1, K, H, W)
  auto any = F::max_pool2d(x, F::MaxPool2dFuncOptions(patch).stride(patch));  // (1, K, h, w)
  return any.flatten(2).squeeze(0).transpose(0, 1).contiguous();             // (N, K)
}

DenseTeacherTask::DenseTeacherTask(const DenseTeacherOptions& o, int rank, int world,
                                   int local_rank)
    : opts_(o), device_(select_device(o.device, local_rank)) {
  Manifest all = manifest_load(o.manifest);
  manifest_ = o.split == "all" ? all : all.select_split(o.split);
  if (manifest_.size() == 0)
    raise<DataError>("manifest '", o.manifest, "' has no rows in split '", o.split, "'");
  for (const auto& r : manifest_.rows)
    if (r.mask.empty())
      raise<DataError>(o.manifest, ":", r.line, ": no mask (a dense teacher needs bit masks)");
  const InputSpec spec = model_input_spec(o.model);
  mean_ = spec.mean, std_ = spec.std;
  torch::manual_seed(o.loader.seed);
  ViTOptions v = model_options(o.model);
  v.img_size(o.img_size).num_classes(o.num_bits).head_init_scale(1.0);
  if (o.depth > 0) v.depth(o.depth);
  model_ = VisionTransformer(v);
  model_->to(device_);
  LoaderOptions lo = o.loader;
  lo.rank = rank;
  lo.world_size = world;
  lo.device = device_;  // a CUDA step gets its batch prefetched onto the GPU
  loader_ = std::make_unique<Loader>(
      manifest_.size(), [this](int64_t i, Rng& rng) { return load(i, rng); }, lo,
      Loader::CollateFn{}, [this](int64_t i) { return manifest_.rows[static_cast<size_t>(i)].path; });
  log_info("dense teacher ", o.model, " (", v.depth(), " blocks, ", o.img_size, "px) on ",
           manifest_.size(), " images, ", o.num_bits, " mask bits per patch, device ", device_.str());
}

Sample DenseTeacherTask::load(int64_t index, Rng& rng) const {
  const ManifestRow& row = manifest_.rows[static_cast<size_t>(index)];
  torch::Tensor image = unit_to_tensor(image_read_unit(row.path, {}));
  cv::Mat mk = mask_read(row.mask);
  torch::Tensor mask = torch::from_blob(mk.data, {1, mk.rows, mk.cols}, torch::kUInt8).clone();
  SegPair p = joint_resize({image, mask}, opts_.img_size, opts_.img_size, Interp::kBicubic);
  if (rng.bernoulli(opts_.flip_p)) p = joint_hflip(p);
  Sample s;
  s.image = normalize(p.image, mean_, std_);
  s.labels = patch_targets(p.mask, model_->options().patch_size(), opts_.num_bits);
  s.index = index;
  return s;
}

std::vector<NamedParam> DenseTeacherTask::trainable() {
  std::vector<NamedParam> out;
  for (auto& p : model_->named_parameters(true)) out.push_back({p.key(), p.value()});
  return out;
}

MicroStep DenseTeacherTask::forward_micro() {
  const Batch b = loader_->next_in_epoch();
  model_->train();
  auto x = b.image.to(device_, true);
  auto y = b.labels.to(device_, true);                    // (B, N, K)
  torch::Tensor logits;
  {
    Autocast ac(opts_.bf16 && (device_.is_cuda() || opts_.bf16_cpu), device_.type());
    auto tokens = model_->forward_features(x).slice(1, 1);  // final-norm patch tokens
    logits = model_->head->forward(tokens).to(torch::kFloat32);  // (B, N, K)
  }
  MicroStep ms;
  ms.loss = F::binary_cross_entropy_with_logits(
      logits, y,
      F::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(
          torch::full({opts_.num_bits}, opts_.pos_weight, logits.options())));
  {
    torch::NoGradGuard ng;
    ms.logs["patch_acc"] = (logits.gt(0).to(torch::kFloat32) == y).to(torch::kFloat32).mean().item<double>();
  }
  ms.samples = x.size(0);
  return ms;
}

TensorMap DenseTeacherTask::model_state() {
  TensorMap sd = state_dict_timm(*model_);
  for (auto& kv : sd) kv.second = kv.second.detach().cpu().clone();
  return sd;
}

void DenseTeacherTask::load_model_state(const TensorMap& state) {
  load_weights(*model_, state, WeightLoadOptions().strict(true));
}

nlohmann::json DenseTeacherTask::run_identity() {
  return {{"model", opts_.model},     {"depth", model_->options().depth()},
          {"img_size", opts_.img_size}, {"num_bits", opts_.num_bits},
          {"batch_size", opts_.loader.batch_size}, {"seed", opts_.loader.seed},
          {"images", manifest_.size()}};
}

}  // namespace evax
