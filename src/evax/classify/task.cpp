#include "evax/classify/task.h"

#include <algorithm>
#include <filesystem>

#include "evax/classify/losses.h"
#include "evax/core/log.h"
#include "evax/core/strings.h"
#include "evax/data/image_folder.h"
#include "evax/data/preprocess.h"
#include "evax/distributed/comm.h"
#include "evax/io/image.h"
#include "evax/models/load.h"
#include "evax/models/registry.h"
#include "evax/models/weights.h"
#include "evax/train/autocast.h"
#include "evax/train/run_checkpoint.h"
#include "evax/train/runtime.h"

namespace fs = std::filesystem;

namespace evax {
namespace {

const char* kSplits[] = {"train", "val", "test"};

bool is_split(const std::string& s) { return s == "train" || s == "val" || s == "test"; }

// The finetuning init may leave the head out (MIM and pretraining weights have none; a finetuned
// checkpoint of another class count has the wrong one) and fc_norm (MIM weights map their final
// norm onto it; other weights may lack it). Anything else missing is a wrong checkpoint.
const std::vector<std::string> kInitDroppable = {"head.", "fc_norm."};

}  // namespace

AdamWOptions classify_optimizer_defaults() {
  return AdamWOptions().lr(1e-3).min_lr(1e-6).beta2(0.999).eps(1e-8).clip_grad(0);
}

EvalHookOptions classify_eval_defaults() { return EvalHookOptions().metric("mauc").mode("max"); }

ClassifyOptions classify_options_from_config(Config& cfg) {
  ClassifyOptions o;
  auto m = cfg.view("model");
  o.model.model(m.get<std::string>(
      "name", o.model.model(), "registered architecture to finetune, e.g. eva_x_small_patch16"));
  model_options(o.model.model());  // validates the name early
  o.model.depth(m.get<int64_t>(
      "depth", 0,
      "number of transformer blocks, overriding the architecture's (small experiments)"));
  m.check("depth", o.model.depth() >= 0, "must be >= 0 (0 = the model's own depth)");
  o.model.drop_path(m.get<double>("drop_path", o.model.drop_path(),
                                  "stochastic depth rate of the last block; block i gets "
                                  "i/(depth-1) of it (EVA-X's --drop_path)"));
  m.check("drop_path", o.model.drop_path() >= 0 && o.model.drop_path() < 1, "must be in [0, 1)");
  o.init = m.get<std::string>(
      "init", o.init,
      "initial weights: an EVA-X MIM .pt or *_ft.pth, a timm-named file, an evax checkpoint or "
      "run directory; empty = from scratch");

  auto f = cfg.view("finetune");
  o.mode = f.get<std::string>(
      "mode", o.mode, "full finetuning, or linear probing of the head on a frozen backbone");
  f.check("mode", o.mode == "full" || o.mode == "linear", "must be full or linear");
  o.layer_decay = f.get<double>("layer_decay", o.layer_decay,
                                "each layer's learning rate is this times the next one's, the "
                                "head's at full lr (EVA-X's --layer_decay)");
  f.check("layer_decay", o.layer_decay > 0 && o.layer_decay <= 1, "must be in (0, 1]");

  auto d = cfg.view("data");
  o.manifest = d.get<std::string>(
      "manifest", o.manifest, "manifest CSV of image paths, splits and label columns");
  for (const char* s : kSplits) {
    const std::string root =
        d.get<std::string>(std::string("folders.") + s, "",
                           "root of this split's class-per-folder image tree (one folder per "
                           "class), instead of a manifest");
    if (!root.empty()) o.folders[s] = root;
  }
  d.check("manifest", o.manifest.empty() != o.folders.empty(),
          "set exactly one of data.manifest (a manifest CSV) and data.folders (class-per-folder "
          "trees by split)");
  o.classes = d.get<std::vector<std::string>>(
      "classes", o.classes,
      "label columns to train on, in output order; empty = every label column (or class folder)");
  const std::string kind = d.get<std::string>(
      "task", "multilabel",
      "multilabel (a sigmoid and BCE per class) or multiclass (softmax cross-entropy, e.g. "
      "COVIDx)");
  d.check("task", kind == "multilabel" || kind == "multiclass", "must be multilabel or multiclass");
  o.multiclass = kind == "multiclass";
  o.train_split = d.get<std::string>("train_split", o.train_split, "split trained on");
  d.check("train_split", is_split(o.train_split), "must be train, val or test");
  const std::string missing =
      d.get<std::string>("missing", "ignore", "what a missing label (empty cell) becomes");
  d.check("missing", missing == "ignore" || missing == "zeros",
          "must be ignore (masked out of the loss) or zeros (EVA-X)");
  o.missing_as_zero = missing == "zeros";
  o.uncertain.policy =
      d.get<std::string>("uncertain.policy", o.uncertain.policy,
                         "what an uncertain (-1) label of a class not in data.uncertain.ones "
                         "becomes: 0, 1, masked out, or an error");
  const auto& up = o.uncertain.policy;
  d.check("uncertain.policy", up == "zeros" || up == "ones" || up == "ignore" || up == "error",
          "must be zeros, ones, ignore or error");
  o.uncertain.ones = d.get<std::vector<std::string>>(
      "uncertain.ones", o.uncertain.ones,
      "classes whose uncertain labels become 1 whatever the policy (U-Ones; CheXpert: Atelectasis, "
      "Edema)");
  o.uncertain.smooth = d.get<bool>(
      "uncertain.smooth", o.uncertain.smooth,
      "train on one seeded value per class for uncertain labels, U(0.7, 0.8) if U-Ones, else "
      "U(0.2, 0.3) (EVA-X's --use_smooth_label)");
  o.model.img_size(d.get<int64_t>("img_size", o.model.img_size(),
                                  "input side in pixels (EVA-X's --input_size)"));
  d.check("img_size", o.model.img_size() >= 16 && o.model.img_size() % 16 == 0,
          "must be a positive multiple of 16");
  o.train_transform = d.get<std::string>(
      "train_transform", o.train_transform,
      "transform of training images; resize_crop is the evaluation transform (EVA-X's CheXpert and "
      "COVIDx runs)");
  d.check("train_transform", o.train_transform == "augment" || o.train_transform == "resize_crop",
          "must be augment (RandomResizedCrop + flip + RandAugment) or resize_crop");
  for (const char* k : {"augment.size", "augment.mean", "augment.std"})
    d.check(k, !d.has(k), "is set by data.img_size / data.mean / data.std");
  o.augment = classify_augment_options_from_config(d.at("augment"));
  o.crop_pct = d.get<double>("crop_pct", eval_crop_pct(o.model.img_size()),
                             "evaluation crop: shorter side resized to img_size / crop_pct, then "
                             "centre crop (default 0.875 up to 224 px, else 1)");
  d.check("crop_pct", o.crop_pct > 0 && o.crop_pct <= 1, "must be in (0, 1]");
  const InputSpec in = model_input_spec(o.model.model());
  o.mean = d.get<double>("mean", in.mean,
                         "normalisation mean of the [0, 1] grey values (default: the model's own)");
  o.std = d.get<double>("std", in.std,
                        "normalisation standard deviation (default: the model's own)");
  d.check("std", o.std > 0, "must be > 0");
  o.augment.size = o.model.img_size();
  o.augment.mean = o.mean;
  o.augment.std = o.std;
  o.loader = loader_options_from_config(d.at("loader"));
  // Every step sees a full batch, as EVA-X's DataLoader(drop_last=True).
  if (!d.has("loader.drop_last_batch")) o.loader.drop_last_batch = true;

  auto l = cfg.view("loss");
  o.smoothing = l.get<double>("smoothing", o.smoothing,
                              "label smoothing: BCE targets move towards 0.5, cross-entropy "
                              "spreads it over the classes (EVA-X runs: 0)");
  l.check("smoothing", o.smoothing >= 0 && o.smoothing < 1, "must be in [0, 1)");

  auto e = cfg.view("eval");
  o.eval_split = e.get<std::string>(
      "split", o.eval_split,
      "split evaluated during training for model selection (EVA-X selects on test)");
  e.check("split", is_split(o.eval_split), "must be train, val or test");
  o.test_split = e.get<std::string>("test_split", o.test_split,
                                    "split `evax evaluate` scores without --split");
  e.check("test_split", is_split(o.test_split), "must be train, val or test");
  o.eval_batch_size =
      e.get<int64_t>("batch_size", o.eval_batch_size, "evaluation batch size per rank");
  e.check("batch_size", o.eval_batch_size >= 1, "must be >= 1");
  o.auc_scores = e.get<std::string>(
      "auc_scores", o.auc_scores,
      "scores of a multiclass model for AUC and predictions.csv: softmax probabilities or each "
      "logit's sigmoid (EVA-X)");
  e.check("auc_scores", o.auc_scores == "softmax" || o.auc_scores == "sigmoid",
          "must be softmax or sigmoid");

  read_run_keys(cfg, o);
  return o;
}

nlohmann::json ClassifierSpec::to_json() const {
  return {{"kind", "classifier"}, {"model", model},     {"depth", depth},
          {"img_size", img_size}, {"classes", classes}, {"multiclass", multiclass},
          {"crop_pct", crop_pct}, {"mean", mean},       {"std", std}};
}

ClassifierSpec ClassifierSpec::from_json(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object() || j.value("kind", "") != "classifier")
    raise<DataError>("'", origin, "' is not a classifier checkpoint (its meta.json \"task\" does "
                     "not describe one: was it written by evax finetune?)");
  ClassifierSpec s;
  try {
    s.model = j.at("model").get<std::string>();
    s.depth = j.at("depth").get<int64_t>();
    s.img_size = j.at("img_size").get<int64_t>();
    s.classes = j.at("classes").get<std::vector<std::string>>();
    s.multiclass = j.at("multiclass").get<bool>();
    s.crop_pct = j.at("crop_pct").get<double>();
    s.mean = j.at("mean").get<double>();
    s.std = j.at("std").get<double>();
  } catch (const nlohmann::json::exception& e) {
    raise<DataError>("'", origin, "': the classifier description is incomplete (", e.what(), ")");
  }
  return s;
}

ClassifyTask::ClassifyTask(const ClassifyOptions& o, int rank, int world, Comm* comm, int local_rank)
    : opts_(o), rank_(rank), world_(world), comm_(comm), device_(select_device(o.device, local_rank)) {
  // Every split, from the manifest or the folders.
  Manifest all;
  if (!o.manifest.empty()) {
    ManifestOptions mo;
    mo.allow_uncertain = true;
    all = manifest_load(o.manifest, mo);
  } else {
    for (const auto& [split, root] : o.folders) {
      Manifest m = image_folder_manifest(root, ImageFolderOptions().split(split));
      if (all.rows.empty() && all.label_names.empty()) {
        all = m;
        continue;
      }
      if (m.label_names != all.label_names)
        raise<DataError>("class folders differ between splits: '", root, "' has ",
                         join_with(m.label_names), "; the others ",
                         join_with(all.label_names));
      all.rows.insert(all.rows.end(), m.rows.begin(), m.rows.end());
    }
  }
  classes_ = o.classes.empty() ? all.label_names : o.classes;
  if (classes_.empty()) raise<DataError>("'", all.file, "' has no label columns to classify");
  std::vector<std::string> absent;
  for (const auto& c : classes_)
    if (std::find(all.label_names.begin(), all.label_names.end(), c) == all.label_names.end())
      absent.push_back(c);
  if (!absent.empty())
    raise<DataError>("'", all.file, "' lacks the label column(s) ", join_with(absent),
                     " of data.classes (it has: ", join_with(all.label_names), ")");
  all = all.select_labels(classes_);
  if (o.multiclass && classes_.size() < 2)
    raise<ConfigError>("data.task: multiclass needs at least 2 classes, got ", classes_.size());
  for (const auto& name : o.uncertain.ones)
    if (std::find(classes_.begin(), classes_.end(), name) == classes_.end())
      raise<ConfigError>("data.uncertain.ones names '", name, "', which is not among the classes (",
                         join_with(classes_), ")");
  for (const char* s : kSplits) splits_[s] = all.select_split(s);
  train_ = splits_.at(o.train_split);
  eval_ = splits_.at(o.eval_split);
  for (const auto& [name, rows] : {std::pair<std::string, const Manifest*>{o.train_split, &train_},
                                   {o.eval_split, &eval_}})
    if (rows->size() == 0)
      raise<DataError>("'", all.file, "' has no rows in split '", name, "'");
  if (o.eval_split == "test")
    log_warn("eval.split: test selects the model on the test split (EVA-X's protocol): the test "
             "numbers of best/ are then optimistically biased; select on val for an unbiased one");

  // Uncertain-label targets: per class U-Ones or U-Zeros, smoothed once per class from the seed.
  Rng smooth_rng(o.loader.seed, {0x5e1ec7});
  for (const auto& c : classes_) {
    const bool ones = o.uncertain.policy == "ones" ||
                      std::find(o.uncertain.ones.begin(), o.uncertain.ones.end(), c) !=
                          o.uncertain.ones.end();
    uncertain_ones_.push_back(ones);
    const double s = ones ? smooth_rng.uniform(0.7, 0.8) : smooth_rng.uniform(0.2, 0.3);
    smooth_value_.push_back(static_cast<float>(o.uncertain.smooth ? s : (ones ? 1.0 : 0.0)));
  }

  // The model: fresh weights from the run's seed (the same on every rank), then the init file.
  torch::manual_seed(o.loader.seed);
  ClassifierOptions mo = o.model;
  mo.num_classes(static_cast<int64_t>(classes_.size()));
  model_ = classifier_build(mo);
  if (!o.init.empty()) {
    const std::string path = run_weights_path(o.init);
    WeightLoadReport rep = load_checkpoint_into(
        *model_, path, "classifier " + o.model.model(),
        WeightLoadOptions().strict(true).droppable(kInitDroppable));
    log_info("initialised from ", path, ": ", rep.summary());
  } else {
    log_info("no model.init: training ", o.model.model(), " from scratch");
  }
  model_->to(device_);
  if (linear()) {
    for (auto& p : model_->named_parameters(true))
      if (p.key().rfind("head.", 0) != 0) p.value().set_requires_grad(false);
    log_info("linear probing: computing the frozen features of ", train_.size(), " training images");
    auto [feats, idx] = infer(train_, true);
    train_features_ = feats;
  }

  LoaderOptions lo = o.loader;
  lo.rank = rank;
  lo.world_size = world;
  lo.device = device_;  // a CUDA step gets its batch prefetched onto the GPU
  loader_ = std::make_unique<Loader>(
      train_.size(), [this](int64_t i, Rng& rng) { return load_train(i, rng); }, lo,
      Loader::CollateFn{}, [this](int64_t i) { return train_.rows[static_cast<size_t>(i)].path; });
  log_info("finetuning ", o.model.model(), " (", model_->options().depth(), " blocks, ",
           o.model.img_size(), "px, ", linear() ? "linear probe" : "full", ") on ", train_.size(),
           " ", o.train_split, " images, selecting on ", eval_.size(), " ", o.eval_split,
           " images; ", classes_.size(), " classes (", o.multiclass ? "multi-class" : "multi-label",
           "), device ", device_.str(), autocast_on() ? ", bf16 autocast" : ", float32");
}

ClassifyTask::~ClassifyTask() = default;

std::pair<torch::Tensor, torch::Tensor> ClassifyTask::targets(const ManifestRow& row,
                                                               bool for_metrics) const {
  const auto k = static_cast<int64_t>(classes_.size());
  auto y = torch::zeros({k}, torch::kFloat32), m = torch::zeros({k}, torch::kFloat32);
  auto ya = y.accessor<float, 1>(), ma = m.accessor<float, 1>();
  for (int64_t c = 0; c < k; ++c) {
    const float v = row.labels[static_cast<size_t>(c)];
    if (v != v) {  // missing
      if (opts_.missing_as_zero) ma[c] = 1;
      continue;
    }
    if (v >= 0) {
      ya[c] = v, ma[c] = 1;
      continue;
    }
    // uncertain (-1)
    if (opts_.uncertain.policy == "error")
      raise<DataError>(opts_.manifest.empty() ? row.path : opts_.manifest + ":" +
                                                               std::to_string(row.line),
                       ": class ", classes_[static_cast<size_t>(c)], " is uncertain (-1); set ",
                       "data.uncertain.policy (zeros, ones or ignore) to train on such labels");
    if (opts_.uncertain.policy == "ignore" &&
        !uncertain_ones_[static_cast<size_t>(c)])
      continue;
    ma[c] = 1;
    ya[c] = for_metrics ? (uncertain_ones_[static_cast<size_t>(c)] ? 1.0f : 0.0f)
                        : smooth_value_[static_cast<size_t>(c)];
  }
  return {y, m};
}

Sample ClassifyTask::load_train(int64_t index, Rng& rng) const {
  const ManifestRow& row = train_.rows[static_cast<size_t>(index)];
  Sample s;
  if (train_features_.defined()) {
    s.image = train_features_[index].clone();
  } else {
    cv::Mat unit = image_read_unit(row.path, {});
    s.image = opts_.train_transform == "augment"
                  ? classify_train_transform(unit_to_tensor(unit), rng, opts_.augment)
                  : eval_transform(unit, opts_.model.img_size(), opts_.crop_pct, opts_.mean,
                                   opts_.std);
  }
  auto [y, m] = targets(row, false);
  s.labels = y;
  s.label_mask = m;
  s.index = index;
  return s;
}

torch::Tensor ClassifyTask::eval_image(const std::string& path) const {
  return eval_transform(image_read_unit(path, {}), opts_.model.img_size(), opts_.crop_pct,
                        opts_.mean, opts_.std);
}

std::vector<NamedParam> ClassifyTask::trainable() {
  std::vector<NamedParam> out;
  for (auto& p : model_->named_parameters(true))
    if (!linear() || p.key().rfind("head.", 0) == 0) out.push_back({p.key(), p.value()});
  return out;
}

ParamGroups ClassifyTask::param_groups(double weight_decay) {
  return classifier_param_groups(*model_, weight_decay, opts_.layer_decay,
                                 linear() ? std::vector<std::string>{"head."}
                                          : std::vector<std::string>{});
}

int64_t ClassifyTask::micro_batches_per_epoch() { return loader_->batches_per_epoch(); }

void ClassifyTask::start_epoch(int64_t epoch, int64_t skip) { loader_->start_epoch(epoch, skip); }

MicroStep ClassifyTask::forward_micro() {
  const Batch b = loader_->next_in_epoch();
  return forward_batch(b.image, b.labels, b.label_mask);
}

torch::Tensor ClassifyTask::run_model(const torch::Tensor& x) {
  Autocast ac(autocast_on(), device_.type());
  // Linear mode feeds pooled features straight to the head.
  auto out = x.dim() == 2 ? model_->head->forward(x) : model_->forward(x);
  return out.to(torch::kFloat32);
}

MicroStep ClassifyTask::forward_batch(const torch::Tensor& images, const torch::Tensor& labels,
                                      const torch::Tensor& label_mask) {
  model_->train();
  auto x = images.to(device_, true);
  auto y = labels.to(device_, true);
  auto m = label_mask.to(device_, true);
  auto logits = run_model(x);
  MicroStep ms;
  ms.loss = opts_.multiclass
                ? evax::cross_entropy_loss(logits, one_hot_to_index(y, m),
                                     CrossEntropyLossOptions().smoothing(opts_.smoothing))
                : multilabel_bce_loss(logits, y, m, BceLossOptions().smoothing(opts_.smoothing));
  ms.samples = x.size(0);
  return ms;
}

std::pair<torch::Tensor, std::vector<int64_t>> ClassifyTask::infer(const Manifest& rows,
                                                                    bool features) {
  torch::NoGradGuard ng;
  model_->eval();
  LoaderOptions lo = opts_.loader;
  lo.batch_size = opts_.eval_batch_size;
  lo.shuffle = false;
  lo.drop_last = false;
  lo.drop_last_batch = false;
  lo.data_pct = 1.0;
  lo.epoch_length = 0;
  lo.row_permutation_seed = -1;  // evaluation reads every row once, in manifest order
  lo.chunks = 0;
  lo.chunks_used = 0;
  lo.rank = rank_;
  lo.world_size = world_;
  Loader loader(
      rows.size(),
      [&](int64_t i, Rng&) {
        Sample s;
        s.image = eval_image(rows.rows[static_cast<size_t>(i)].path);
        s.index = i;
        return s;
      },
      lo, Loader::CollateFn{}, [&](int64_t i) { return rows.rows[static_cast<size_t>(i)].path; });
  loader.start_epoch(0);
  std::vector<torch::Tensor> outs, idx;
  while (auto b = loader.next()) {
    auto x = b->image.to(device_, true);
    torch::Tensor out;
    {
      Autocast ac(autocast_on(), device_.type());
      out = features ? model_->forward_head(model_->forward_features(x), true) : model_->forward(x);
    }
    outs.push_back(out.to(torch::kFloat32).cpu());
    idx.push_back(b->indices.cpu());
  }
  torch::Tensor out = torch::cat(outs), ind = torch::cat(idx);
  if (comm_ && world_ > 1) {
    // Every rank has the same (padded) number of samples: gather, then keep each image once.
    out = comm_->all_gather(out.to(comm_->device())).cpu().flatten(0, 1);
    ind = comm_->all_gather(ind.to(comm_->device())).cpu().flatten(0, 1);
  }
  const int64_t n = rows.size();
  torch::Tensor result = torch::zeros({n, out.size(1)}, torch::kFloat32);
  std::vector<bool> seen(static_cast<size_t>(n), false);
  auto ia = ind.accessor<int64_t, 1>();
  for (int64_t r = 0; r < ind.size(0); ++r) {
    const int64_t i = ia[r];
    if (seen[static_cast<size_t>(i)]) continue;  // the sampler's padding
    seen[static_cast<size_t>(i)] = true;
    result[i].copy_(out[r]);
  }
  EVAX_ASSERT(std::all_of(seen.begin(), seen.end(), [](bool b) { return b; }),
              "evaluation missed images");
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  return {result, order};
}

ScoredLabels ClassifyTask::predict_split(const std::string& split) {
  auto it = splits_.find(split);
  if (it == splits_.end()) raise<ConfigError>("unknown split '", split, "' (train, val or test)");
  const Manifest& rows = it->second;
  if (rows.size() == 0) raise<DataError>("the data has no rows in split '", split, "'");
  torch::Tensor logits = infer(rows, false).first;
  torch::Tensor scores = scores_of(logits);
  ScoredLabels d;
  d.classes = classes_;
  const int64_t k = static_cast<int64_t>(classes_.size());
  auto sa = scores.to(torch::kFloat64).contiguous();
  d.scores.assign(sa.data_ptr<double>(), sa.data_ptr<double>() + sa.numel());
  for (const auto& row : rows.rows) {
    d.ids.push_back(row.path);
    auto [y, m] = targets(row, true);
    for (int64_t c = 0; c < k; ++c)
      d.labels.push_back(m[c].item<float>() > 0 ? static_cast<int8_t>(y[c].item<float>() >= 0.5f)
                                                 : kMissingLabel);
  }
  return d;
}

torch::Tensor ClassifyTask::scores_of(const torch::Tensor& logits) const {
  return opts_.multiclass && opts_.auc_scores == "softmax" ? torch::softmax(logits, 1)
                                                          : torch::sigmoid(logits);
}

std::map<std::string, double> ClassifyTask::evaluate(int64_t epoch) {
  (void)epoch;
  torch::Tensor logits;
  if (linear()) {
    // The backbone is frozen: its features of the evaluation split are computed once.
    if (!eval_features_.defined()) eval_features_ = infer(eval_, true).first;
    torch::NoGradGuard ng;
    model_->eval();
    logits = run_model(eval_features_.to(device_)).cpu();
  } else {
    logits = infer(eval_, false).first;
  }
  std::vector<torch::Tensor> ys, ms;
  for (const auto& row : eval_.rows) {
    auto [y, m] = targets(row, true);
    ys.push_back(y), ms.push_back(m);
  }
  torch::Tensor y = torch::stack(ys), m = torch::stack(ms);
  std::map<std::string, double> out;
  {
    torch::NoGradGuard ng;
    out["loss"] = (opts_.multiclass ? evax::cross_entropy_loss(logits, one_hot_to_index(y, m))
                                    : multilabel_bce_loss(logits, y, m))
                      .item<double>();
  }
  torch::Tensor scores = scores_of(logits);
  ScoredLabels d;
  d.classes = classes_;
  auto sa = scores.to(torch::kFloat64).contiguous();
  d.scores.assign(sa.data_ptr<double>(), sa.data_ptr<double>() + sa.numel());
  auto ya = y.accessor<float, 2>(), ma = m.accessor<float, 2>();
  for (int64_t r = 0; r < y.size(0); ++r)
    for (int64_t c = 0; c < y.size(1); ++c)
      d.labels.push_back(ma[r][c] > 0 ? static_cast<int8_t>(ya[r][c] >= 0.5f) : kMissingLabel);
  AucResult auc = per_class_auc(d);
  const double nan = std::nan("");
  out["mauc"] = auc.mauc.value_or(nan);
  for (size_t c = 0; c < classes_.size(); ++c) out["auc/" + classes_[c]] = auc.auc[c].value_or(nan);
  if (opts_.multiclass) out["accuracy"] = multiclass_metrics(d).accuracy;
  return out;
}

TensorMap ClassifyTask::model_state() {
  TensorMap sd = state_dict_timm(*model_);
  for (auto& kv : sd) kv.second = kv.second.detach().cpu().clone();
  return sd;
}

void ClassifyTask::load_model_state(const TensorMap& state) {
  load_weights(*model_, state, WeightLoadOptions().strict(true));
}

nlohmann::json ClassifyTask::run_identity() {
  return {{"model", opts_.model.model()}, {"depth", model_->options().depth()},
          {"img_size", opts_.model.img_size()}, {"classes", classes_},
          {"mode", opts_.mode}, {"batch_size", opts_.loader.batch_size},
          {"seed", opts_.loader.seed}, {"images", train_.size()}};
}

ClassifierSpec ClassifyTask::spec() const {
  ClassifierSpec s;
  s.model = opts_.model.model();
  s.depth = model_->options().depth();
  s.img_size = opts_.model.img_size();
  s.classes = classes_;
  s.multiclass = opts_.multiclass;
  s.crop_pct = opts_.crop_pct;
  s.mean = opts_.mean;
  s.std = opts_.std;
  return s;
}

}  // namespace evax
