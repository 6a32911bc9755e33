#include "evax/pretrain/task.h"

#include "evax/core/log.h"
#include "evax/io/image.h"
#include "evax/io/weight_file.h"
#include "evax/models/load.h"
#include "evax/models/registry.h"
#include "evax/models/weights.h"
#include "evax/train/autocast.h"
#include "evax/train/run_checkpoint.h"
#include "evax/train/runtime.h"

namespace evax {
namespace {

// What the strict loads may leave out (documented at PretrainOptions::teacher_checkpoint and
// init_checkpoint): the teacher has no classifier; the student's MIM parts may start fresh.
const std::vector<std::string> kTeacherDroppable = {"head."};
const std::vector<std::string> kStudentDroppable = {"mask_token", "lm_head."};

}  // namespace

PretrainOptions pretrain_options_from_config(Config& cfg) {
  PretrainOptions o;
  auto m = cfg.view("model");
  o.model = m.get<std::string>("name", o.model,
                               "registered student architecture, e.g. eva_x_tiny_patch16");
  model_options(o.model);  // validates the name early
  o.depth = m.get<int64_t>(
      "depth", o.depth,
      "number of student blocks, overriding the architecture's (small experiments)");
  m.check("depth", o.depth >= 0, "must be >= 0 (0 = the model's own depth)");
  o.drop_path = m.get<double>(
      "drop_path", o.drop_path,
      "stochastic depth rate of the student's last block; block i gets i/(depth-1) of it");
  m.check("drop_path", o.drop_path >= 0 && o.drop_path < 1, "must be in [0, 1)");
  o.stop_grad_conv1 = m.get<bool>(
      "stop_grad_conv1", o.stop_grad_conv1,
      "scale the gradient into the patch embedding by 0.1 (EVA-02's --stop_grad_conv1)");
  o.init_checkpoint = m.get<std::string>(
      "init_checkpoint", o.init_checkpoint,
      "weight file that initialises the student, loaded strictly except mask_token and lm_head; "
      "empty = fresh weights");

  auto t = cfg.view("target");
  o.target = t.get<std::string>(
      "kind", o.target,
      "what masked patches regress: a frozen teacher's patch tokens or per-patch normalised "
      "pixels");
  t.check("kind", o.target == "teacher" || o.target == "pixels", "must be teacher or pixels");
  o.teacher = t.get<std::string>("teacher", o.teacher,
                                 "registered architecture of the frozen teacher (EVA-X: MGCA's ViT-B)");
  o.teacher_checkpoint = t.get<std::string>(
      "checkpoint", o.teacher_checkpoint,
      "teacher weights: a file, checkpoint directory or run directory (e.g. a dense teacher run)");
  o.teacher_depth = t.get<int64_t>(
      "teacher_depth", o.teacher_depth,
      "number of teacher blocks, overriding the architecture's (teachers trained here)");
  t.check("teacher_depth", o.teacher_depth >= 0, "must be >= 0 (0 = the teacher's own depth)");
  t.check("checkpoint", o.target != "teacher" || !o.teacher_checkpoint.empty(),
          "target kind teacher needs a teacher checkpoint (MGCA's vit_base.ckpt, or any ViT/16 "
          "checkpoint); use kind: pixels to pretrain without one");

  auto d = cfg.view("data");
  o.manifest = d.require<std::string>("manifest", "manifest CSV of the pretraining images");
  o.split = d.get<std::string>("split", o.split, "manifest split pretrained on (all = every row)");
  d.check("split", o.split == "train" || o.split == "val" || o.split == "test" || o.split == "all",
          "must be train, val, test or all");
  o.views = two_view_options_from_config(d.at("views"));
  o.loader = loader_options_from_config(d.at("loader"));
  // Every step sees a full batch, as DistributedSampler + DataLoader(drop_last=True) in EVA-X.
  if (!d.has("loader.drop_last_batch")) o.loader.drop_last_batch = true;
  d.check("loader.drop_last_batch", o.loader.drop_last_batch,
          "pretraining always drops the last partial batch (every step sees a full batch, as "
          "EVA-X's DataLoader(drop_last=True)); remove the key or set it to true");
  o.masking = masking_options_from_config(cfg.view("masking"),
                                          MaskingOptions().grid(o.views.student_size / 16));
  cfg.check("masking.grid", o.masking.grid() * 16 == o.views.student_size,
            "must equal data.views.student_size / 16");
  read_run_keys(cfg, o);
  return o;
}

PretrainTask::PretrainTask(const PretrainOptions& o, int rank, int world, int local_rank)
    : opts_(o), device_(select_device(o.device, local_rank)) {
  Manifest all = manifest_load(o.manifest);
  manifest_ = o.split == "all" ? all : all.select_split(o.split);
  if (manifest_.size() == 0)
    raise<DataError>("manifest '", o.manifest, "' has no rows in split '", o.split, "'");

  if (o.target == "teacher") {
    ViTOptions to = model_options(o.teacher);
    to.img_size(o.views.teacher_size).num_classes(0).mim_dim(0);
    if (o.teacher_depth > 0) to.depth(o.teacher_depth);
    VisionTransformer teacher(to);
    const std::string path = run_weights_path(o.teacher_checkpoint);
    auto rep = load_checkpoint_into(*teacher, path, "teacher " + o.teacher,
                                    WeightLoadOptions().strict(true).droppable(kTeacherDroppable));
    log_info("teacher ", o.teacher, " (", to.depth(), " blocks) from ", path, ": ", rep.summary());
    target_ = std::make_unique<TeacherTarget>(teacher, o.teacher);
  } else {
    target_ = std::make_unique<PixelTarget>(16);
  }
  target_->to(device_);

  // Initial weights from the run's seed: identical on every rank and in every repeat of the run.
  torch::manual_seed(o.loader.seed);
  ViTOptions so = model_options(o.model);
  so.img_size(o.views.student_size).num_classes(0).mim_dim(target_->dim()).final_norm(true);
  so.drop_path_rate(o.drop_path).stop_grad_conv1(o.stop_grad_conv1);
  if (o.depth > 0) so.depth(o.depth);
  student_ = VisionTransformer(so);
  if (!o.init_checkpoint.empty()) {
    auto rep = load_checkpoint_into(*student_, o.init_checkpoint, "student " + o.model,
                                    WeightLoadOptions().strict(true).droppable(kStudentDroppable));
    log_info("student initialised from ", o.init_checkpoint, ": ", rep.summary());
  }
  student_->to(device_);

  LoaderOptions lo = o.loader;
  lo.rank = rank;
  lo.world_size = world;
  lo.device = device_;  // a CUDA step gets its batch prefetched onto the GPU
  loader_ = std::make_unique<Loader>(
      manifest_.size(), [this](int64_t i, Rng& rng) { return load_sample(i, rng); }, lo,
      Loader::CollateFn{}, [this](int64_t i) { return manifest_.rows[static_cast<size_t>(i)].path; });
  log_info("pretraining ", o.model, " (", so.depth(), " blocks, ", so.img_size(), "px) on ",
           manifest_.size(), " images, target: ", target_->describe(), " (", target_->dim(),
           "-d), mask ratio ", o.masking.ratio(), " (", o.masking.num_masked(), " of ",
           o.masking.grid() * o.masking.grid(), " patches), device ", device_.str(),
           autocast_on() ? ", bf16 autocast" : ", float32");
}

Sample PretrainTask::load_sample(int64_t index, Rng& rng) const {
  const ManifestRow& row = manifest_.rows[static_cast<size_t>(index)];
  cv::Mat unit = image_read_unit(row.path, {});
  TwoViews v = two_view_crop(unit_to_tensor(unit), rng, opts_.views);
  Sample s;
  s.image = v.student;
  s.image2 = v.teacher;
  s.patch_mask = mask_generate(opts_.masking, rng).flatten();  // (N,) bool, patch order
  s.index = index;
  return s;
}

std::vector<NamedParam> PretrainTask::trainable() {
  std::vector<NamedParam> out;
  for (auto& p : student_->named_parameters(true)) out.push_back({p.key(), p.value()});
  return out;
}

std::vector<torch::Tensor> PretrainTask::buffers() { return student_->buffers(true); }

int64_t PretrainTask::micro_batches_per_epoch() { return loader_->batches_per_epoch(); }

void PretrainTask::start_epoch(int64_t epoch, int64_t skip) { loader_->start_epoch(epoch, skip); }

MicroStep PretrainTask::forward_micro() {
  const Batch b = loader_->next_in_epoch();
  return forward_batch(b.image, b.image2, b.patch_mask);
}

MicroStep PretrainTask::forward_batch(const torch::Tensor& student_images,
                                      const torch::Tensor& teacher_view,
                                      const torch::Tensor& mask_in) {
  student_->train();
  auto images = student_images.to(device_, /*non_blocking=*/true);
  auto teacher_images = teacher_view.to(device_, true);
  auto mask = mask_in.to(device_, true);
  MicroStep ms;
  {
    Autocast ac(autocast_on(), device_.type());
    auto targets = target_->compute(teacher_images);
    auto pred = student_->forward_mim(images, mask);
    ms.loss = mim_cosine_loss(pred, targets, mask);
  }
  ms.logs["mask_ratio"] = mask.to(torch::kFloat32).mean().item<double>();
  ms.samples = images.size(0);
  return ms;
}

TensorMap PretrainTask::model_state() {
  TensorMap sd;
  for (auto& p : student_->named_parameters(true)) sd.emplace_back(p.key(), p.value().detach().cpu());
  return map_timm_to_eva02(sd);
}

void PretrainTask::load_model_state(const TensorMap& state) {
  load_weights(*student_, state, WeightLoadOptions().strict(true));
}

nlohmann::json PretrainTask::run_identity() {
  const ViTOptions& so = student_->options();
  return {{"model", opts_.model},
          {"depth", so.depth()},
          {"img_size", so.img_size()},
          {"target", target_->describe()},
          {"target_dim", target_->dim()},
          {"batch_size", opts_.loader.batch_size},
          {"seed", opts_.loader.seed},
          {"images", manifest_.size()}};
}

}  // namespace evax
