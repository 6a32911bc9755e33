#include "evax/segment/task.h"

#include <algorithm>

#include "evax/core/log.h"
#include "evax/core/strings.h"
#include "evax/data/preprocess.h"
#include "evax/distributed/comm.h"
#include "evax/io/image.h"
#include "evax/io/safetensors.h"
#include "evax/train/autocast.h"
#include "evax/train/run_checkpoint.h"
#include "evax/train/runtime.h"

namespace evax {
namespace {

const char* kSplits[] = {"train", "val", "test"};

bool is_split(const std::string& s) { return s == "train" || s == "val" || s == "test"; }

}  // namespace

AdamWOptions segment_optimizer_defaults() {
  return AdamWOptions().lr(6e-5).min_lr(0).weight_decay(0.05).beta1(0.9).beta2(0.999).eps(1e-8)
      .clip_grad(0);
}

EvalHookOptions segment_eval_defaults() { return EvalHookOptions().metric("mDice").mode("max"); }

SegmentOptions segment_options_from_config(Config& cfg) {
  SegmentOptions o;
  auto m = cfg.view("model");
  o.model = m.get<std::string>(
      "name", o.model,
      "UperNet on an EVA-X backbone: upernet_eva_x_tiny_patch16, upernet_eva_x_small_patch16 or "
      "upernet_eva_x_base_patch16");
  try {
    o.net = upernet_options(o.model);
  } catch (const ConfigError& e) {
    m.check("name", false, e.what());
  }
  o.net.depth(m.get<int64_t>("depth", o.net.depth(),
                             "backbone transformer blocks to build; fewer than the model's own for "
                             "quick tests"));
  m.check("depth", o.net.depth() >= 0, "must be >= 0 (0 = the backbone's own depth)");
  o.net.drop_path_rate(m.get<double>("drop_path", o.net.drop_path_rate(),
                                     "stochastic depth rate of the last backbone block, rising "
                                     "linearly from 0 at the first"));
  m.check("drop_path", o.net.drop_path_rate() >= 0 && o.net.drop_path_rate() < 1,
          "must be in [0, 1)");
  o.net.channels(m.get<int64_t>("channels", o.net.channels(),
                                "width (channels) of the UPerHead decoder's convolutions"));
  m.check("channels", o.net.channels() >= 1, "must be >= 1");
  o.net.pool_scales(m.get<std::vector<int64_t>>(
      "pool_scales", o.net.pool_scales(),
      "output sides of the pyramid pooling module's average pools (UPerHead PPM), each >= 1"));
  m.check("pool_scales", !o.net.pool_scales().empty(), "must not be empty");
  o.net.out_indices(m.get<std::vector<int64_t>>(
      "out_indices", o.net.out_indices(),
      "0-based backbone blocks feeding the 4 pyramid levels, strictly increasing; with "
      "use_last_feat_only only the last"));
  o.net.use_last_feat_only(m.get<bool>(
      "use_last_feat_only", o.net.use_last_feat_only(),
      "feed only the last out_indices block's output to all four pyramid levels, as EVA-X does"));
  o.net.dropout(m.get<double>(
      "dropout", o.net.dropout(),
      "Dropout2d rate before the heads' final 1x1 classifier conv; 0 = none"));
  m.check("dropout", o.net.dropout() >= 0 && o.net.dropout() < 1, "must be in [0, 1)");
  o.net.norm(m.get<std::string>("norm", o.net.norm(),
                               "BatchNorm of the decoder heads: bn keeps per-process statistics, "
                               "syncbn pools them over all ranks"));
  m.check("norm", o.net.norm() == "bn" || o.net.norm() == "syncbn", "must be bn or syncbn");
  o.channels_last = m.get<std::string>(
      "channels_last", o.channels_last,
      "memory format of the pyramid and heads: true runs their convolutions channels-last "
      "(NHWC, faster with tensor cores), false NCHW, auto: channels-last on CUDA");
  m.check("channels_last",
          o.channels_last == "auto" || o.channels_last == "true" || o.channels_last == "false",
          "must be auto, true or false");
  o.net.aux_head(m.get<bool>("aux_head", o.net.aux_head(),
                            "add mmseg's auxiliary FCN head on pyramid level 2, a training-only "
                            "loss weighted by loss.aux_weight; EVA-X has none"));
  o.init = m.get<std::string>(
      "init", o.init,
      "initial weights, loaded strictly: an EVA-X checkpoint or evax run for the backbone, or a "
      "whole segmentation checkpoint; empty = scratch");

  auto s = cfg.view("segment");
  o.layer_decay = s.get<double>(
      "layer_decay", o.layer_decay,
      "layer decay as in mmseg: backbone block i learns at lr × rate^(depth − i), the pyramid "
      "and heads at lr");
  s.check("layer_decay", o.layer_decay > 0 && o.layer_decay <= 1, "must be in (0, 1]");

  auto d = cfg.view("data");
  o.manifest = d.get<std::string>("manifest", o.manifest,
                                 "manifest CSV of the images, their mask PNGs and splits");
  d.check("manifest", !o.manifest.empty(), "is required (a manifest CSV with a mask column)");
  o.classes = d.get<std::vector<std::string>>(
      "classes", o.classes,
      "class names, background first; two give one sigmoid output channel, more a softmax");
  d.check("classes", o.classes.size() >= 2, "needs the background and at least one class");
  o.mask_values = d.get<std::string>(
      "mask_values", o.mask_values,
      "how mask PNG pixel values become class ids; with ids, 255 marks pixels left out of loss "
      "and metrics");
  d.check("mask_values", o.mask_values == "binary" || o.mask_values == "ids",
          "must be binary (mask > 0 is class 1) or ids (stored values are class ids)");
  d.check("mask_values", o.mask_values == "ids" || o.classes.size() == 2,
          "binary masks make two classes: list exactly two, or use ids");
  // One sigmoid channel for two classes (EVA-X: num_classes 2, out_channels 1), softmax otherwise.
  o.net.num_classes(static_cast<int64_t>(o.classes.size()));
  o.net.out_channels(o.classes.size() == 2 ? 1 : static_cast<int64_t>(o.classes.size()));
  o.train_split = d.get<std::string>("train_split", o.train_split,
                                    "manifest split the model is trained on");
  d.check("train_split", is_split(o.train_split), "must be train, val or test");
  o.net.img_size(d.get<int64_t>(
      "img_size", o.net.img_size(),
      "side in pixels of the square model input; training images and masks are stretched to it"));
  d.check("img_size", o.net.img_size() >= 32 && o.net.img_size() % 16 == 0,
          "must be a multiple of 16, at least 32");
  o.augment.size = o.net.img_size();
  o.augment.flip_p = d.get<double>("flip_p", o.augment.flip_p,
                                  "probability of a horizontal flip of image and mask in training");
  d.check("flip_p", o.augment.flip_p >= 0 && o.augment.flip_p <= 1, "must be in [0, 1]");
  o.augment.photometric = d.get<bool>(
      "photometric", o.augment.photometric,
      "apply mmseg's PhotoMetricDistortion in training: brightness, then contrast, on grey");
  o.augment.photo.brightness_delta =
      d.get<double>("brightness_delta", o.augment.photo.brightness_delta,
                    "largest random brightness shift in 8-bit grey levels, applied with "
                    "probability 0.5 when photometric");
  d.check("brightness_delta", o.augment.photo.brightness_delta >= 0, "must be >= 0");
  const auto contrast = d.get<std::vector<double>>(
      "contrast", {o.augment.photo.contrast.lo, o.augment.photo.contrast.hi},
      "range of the random contrast factor, applied with probability 0.5 when photometric");
  d.check("contrast", contrast.size() == 2 && contrast[0] > 0 && contrast[0] <= contrast[1],
          "must be [lo, hi] with 0 < lo <= hi");
  o.augment.photo.contrast = {contrast[0], contrast[1]};
  const std::string resize = d.get<std::string>(
      "test_resize", "stretch",
      "how evaluated and predicted images are resized to the model input; EVA-X's Lung: "
      "keep_ratio");
  d.check("test_resize", resize == "stretch" || resize == "keep_ratio",
          "must be stretch (to img_size²) or keep_ratio (long edge to img_size, mmseg keep_ratio)");
  o.keep_ratio = resize == "keep_ratio";
  o.augment.mean = d.get<double>(
      "mean", o.augment.mean,
      "normalisation mean of the [0, 1] grey image, the same on all 3 channels; the default is "
      "EVA-X's Merged520k value");
  o.augment.std = d.get<double>(
      "std", o.augment.std,
      "normalisation standard deviation of the [0, 1] grey image; the default is EVA-X's "
      "Merged520k value");
  d.check("std", o.augment.std > 0, "must be > 0");
  o.loader = loader_options_from_config(d.at("loader"));
  // mmseg's train dataloader drops the last incomplete batch.
  if (!d.has("loader.drop_last_batch")) o.loader.drop_last_batch = true;

  auto l = cfg.view("loss");
  o.loss.dice_weight(l.get<double>(
      "dice_weight", o.loss.dice_weight(),
      "weight of mmseg's Dice loss added to the pixel BCE / cross-entropy; 0 = none, as in EVA-X"));
  l.check("dice_weight", o.loss.dice_weight() >= 0, "must be >= 0");
  o.aux_weight = l.get<double>(
      "aux_weight", o.aux_weight,
      "weight of the auxiliary FCN head's loss; used only with model.aux_head");
  l.check("aux_weight", o.aux_weight >= 0, "must be >= 0");

  auto e = cfg.view("eval");
  o.eval_split = e.get<std::string>(
      "split", o.eval_split,
      "manifest split scored during training to select the best checkpoint; test biases the test "
      "numbers");
  e.check("split", is_split(o.eval_split), "must be train, val or test");
  o.test_split = e.get<std::string>(
      "test_split", o.test_split,
      "manifest split scored after training, and by evax evaluate unless --split is given");
  e.check("test_split", is_split(o.test_split), "must be train, val or test");
  o.overlays = e.get<int64_t>(
      "overlays", o.overlays,
      "overlays written for a scored split (eval/<split>/overlays/): half its worst images by "
      "Dice, half its best; 0 = none");
  e.check("overlays", o.overlays >= 0, "must be >= 0");
  o.inference.threshold(e.get<double>(
      "threshold", o.inference.threshold(),
      "with one output channel (two classes): foreground where sigmoid(logit) > threshold"));
  e.check("threshold", o.inference.threshold() > 0 && o.inference.threshold() < 1,
          "must be in (0, 1)");
  o.inference.mode(e.get<std::string>(
      "inference", o.inference.mode(),
      "test-time inference (mmseg test_cfg): one pass over the whole input (EVA-X) or overlapping "
      "windows"));
  e.check("inference", o.inference.mode() == "whole" || o.inference.mode() == "slide",
          "must be whole or slide (sliding window: crop_size, stride)");
  o.inference.crop_size(e.get<int64_t>(
      "crop_size", o.net.img_size(),
      "side in input pixels of the square slide-inference window; defaults to data.img_size"));
  o.inference.stride(e.get<int64_t>(
      "stride", o.inference.crop_size() * 2 / 3,
      "step in input pixels between slide-inference windows; defaults to 2/3 of crop_size"));
  e.check("crop_size", o.inference.crop_size() >= 16 && o.inference.crop_size() % 16 == 0,
          "must be a positive multiple of 16");
  e.check("stride", o.inference.stride() >= 1, "must be >= 1");

  read_run_keys(cfg, o);
  return o;
}

double upernet_layer_decay_scale(const std::string& name, int64_t depth, double rate) {
  const int64_t num_layers = depth + 2;
  int64_t id = num_layers - 1;
  if (name == "backbone.cls_token" || name == "backbone.mask_token" ||
      name == "backbone.pos_embed" || name.rfind("backbone.patch_embed", 0) == 0) {
    id = 0;
  } else if (name.rfind("backbone.blocks.", 0) == 0) {
    const size_t a = std::string("backbone.blocks.").size();
    id = std::stoll(name.substr(a, name.find('.', a) - a)) + 1;
  }
  return std::pow(rate, static_cast<double>(num_layers - id - 1));
}

bool upernet_no_weight_decay(const std::string& name, const torch::Tensor& p) {
  const std::string bias = ".bias";
  return p.dim() == 1 ||
         (name.size() >= bias.size() && name.compare(name.size() - bias.size(), bias.size(), bias) == 0);
}

nlohmann::json SegmenterSpec::to_json() const {
  const UperNetOptions& n = net;
  return {{"kind", "segmenter"},
          {"model", model},
          {"img_size", n.img_size()},
          {"depth", n.depth()},
          {"channels", n.channels()},
          {"pool_scales", n.pool_scales()},
          {"out_indices", n.out_indices()},
          {"use_last_feat_only", n.use_last_feat_only()},
          {"aux_head", n.aux_head()},
          {"norm", n.norm()},
          {"num_classes", n.num_classes()},
          {"out_channels", n.out_channels()},
          {"classes", classes},
          {"mean", mean},
          {"std", std},
          {"keep_ratio", keep_ratio},
          {"inference",
           {{"mode", inference.mode()},
            {"crop_size", inference.crop_size()},
            {"stride", inference.stride()},
            {"threshold", inference.threshold()}}}};
}

SegmenterSpec SegmenterSpec::from_json(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object() || j.value("kind", "") != "segmenter")
    raise<DataError>("'", origin, "' is not a segmentation checkpoint (its meta.json \"task\" does "
                     "not describe one: was it written by evax segment?)");
  SegmenterSpec s;
  try {
    s.model = j.at("model").get<std::string>();
    s.net = upernet_options(s.model);
    s.net.img_size(j.at("img_size").get<int64_t>())
        .depth(j.at("depth").get<int64_t>())
        .channels(j.at("channels").get<int64_t>())
        .pool_scales(j.at("pool_scales").get<std::vector<int64_t>>())
        .out_indices(j.at("out_indices").get<std::vector<int64_t>>())
        .use_last_feat_only(j.at("use_last_feat_only").get<bool>())
        .aux_head(j.at("aux_head").get<bool>())
        .norm(j.at("norm").get<std::string>())
        .num_classes(j.at("num_classes").get<int64_t>())
        .out_channels(j.at("out_channels").get<int64_t>())
        .drop_path_rate(0);
    s.classes = j.at("classes").get<std::vector<std::string>>();
    s.mean = j.at("mean").get<double>();
    s.std = j.at("std").get<double>();
    s.keep_ratio = j.at("keep_ratio").get<bool>();
    const auto& inf = j.at("inference");
    s.inference.mode(inf.at("mode").get<std::string>())
        .crop_size(inf.at("crop_size").get<int64_t>())
        .stride(inf.at("stride").get<int64_t>())
        .threshold(inf.at("threshold").get<double>());
  } catch (const nlohmann::json::exception& e) {
    raise<DataError>("'", origin, "': the segmenter description is incomplete (", e.what(), ")");
  }
  return s;
}

SegmentTask::SegmentTask(const SegmentOptions& o, int rank, int world, Comm* comm, int local_rank)
    : opts_(o), rank_(rank), world_(world), comm_(comm), device_(select_device(o.device, local_rank)) {
  Manifest all = manifest_load(o.manifest);
  for (const char* s : kSplits) splits_[s] = all.select_split(s);
  train_ = splits_.at(o.train_split);
  eval_ = splits_.at(o.eval_split);
  for (const auto& [name, rows] : {std::pair<std::string, const Manifest*>{o.train_split, &train_},
                                   {o.eval_split, &eval_}}) {
    if (rows->size() == 0) raise<DataError>("'", all.file, "' has no rows in split '", name, "'");
    for (const auto& r : rows->rows)
      if (r.mask.empty())
        raise<DataError>(all.file, ":", r.line, ": row '", r.path, "' of split '", name,
                         "' has no mask (segmentation needs the mask column filled)");
  }
  if (o.eval_split == "test")
    log_warn("eval.split: test selects the model on the test split: its test numbers are then "
             "optimistically biased; select on val for an unbiased one");

  torch::manual_seed(o.loader.seed);  // fresh weights from the run's seed, the same on every rank
  model_ = UperNet(o.net);
  if (!o.init.empty()) {
    const std::string path = run_weights_path(o.init);
    WeightLoadReport rep = upernet_load_file(*model_, path, /*strict=*/true);
    log_info("initialised from ", path, ": ", rep.summary());
  } else {
    log_info("no model.init: training ", o.model, " from scratch");
  }
  model_->to(device_);
  model_->set_channels_last(o.channels_last == "true" ||
                            (o.channels_last == "auto" && device_.is_cuda()));
  // EVA-X's pyramid BatchNorm is always synchronised; the heads' when model.norm is syncbn.
  if (comm_ && world_ > 1) model_->set_comm(comm_);

  LoaderOptions lo = o.loader;
  lo.rank = rank;
  lo.world_size = world;
  lo.device = device_;  // a CUDA step gets its batch prefetched onto the GPU
  loader_ = std::make_unique<Loader>(
      train_.size(), [this](int64_t i, Rng& rng) { return load_train(i, rng); }, lo,
      Loader::CollateFn{}, [this](int64_t i) { return train_.rows[static_cast<size_t>(i)].path; });
  log_info("segmenting with ", o.model, " (", o.net.img_size(), "px, decoder ", o.net.channels(),
           " channels, ", o.net.norm(), ") on ", train_.size(), " ", o.train_split,
           " images, selecting on ", eval_.size(), " ", o.eval_split, " images; classes ",
           join_with(o.classes), ", device ", device_.str(),
           autocast_on() ? ", bf16 autocast" : ", float32");
}

SegmentTask::~SegmentTask() = default;

int64_t SegmentTask::rows_in(const std::string& split) const {
  auto it = splits_.find(split);
  return it == splits_.end() ? 0 : it->second.size();
}

torch::Tensor SegmentTask::read_mask(const ManifestRow& row) const {
  cv::Mat m = mask_read(row.mask);
  auto t = torch::from_blob(m.data, {m.rows, m.cols}, torch::kUInt8).clone();
  if (opts_.mask_values == "binary") return (t > 0).to(torch::kUInt8);
  const int64_t k = static_cast<int64_t>(opts_.classes.size());
  auto bad = (t >= k) & (t != kSegIgnoreIndex);
  if (bad.any().item<bool>())
    raise<DataError>(row.mask, ": mask value ", t.masked_select(bad).max().item<int>(),
                     " is not a class id (", k, " classes: ", join_with(opts_.classes),
                     ") nor ", kSegIgnoreIndex, " (ignore)");
  return t;
}

Sample SegmentTask::load_train(int64_t index, Rng& rng) const {
  const ManifestRow& row = train_.rows[static_cast<size_t>(index)];
  cv::Mat unit = image_read_unit(row.path, {});
  torch::Tensor mask = read_mask(row);
  if (mask.size(0) != unit.rows || mask.size(1) != unit.cols)
    raise<DataError>(row.mask, ": mask is ", mask.size(1), "x", mask.size(0), " but its image '",
                     row.path, "' is ", unit.cols, "x", unit.rows);
  SegPair pair{unit_to_tensor(unit), mask.unsqueeze(0)};
  SegPair out = segment_train_transform(pair, rng, opts_.augment);
  Sample s;
  s.image = out.image;
  s.mask = out.mask;
  s.index = index;
  return s;
}

std::vector<NamedParam> SegmentTask::trainable() { return model_->named_params_mmseg(); }

ParamGroups SegmentTask::param_groups(double weight_decay) {
  const int64_t depth = model_->backbone_depth();
  const double rate = opts_.layer_decay;
  return make_param_groups(
      trainable(), weight_decay,
      [&](const std::string& name) { return upernet_layer_decay_scale(name, depth, rate); },
      upernet_no_weight_decay);
}

std::vector<torch::Tensor> SegmentTask::buffers() { return model_->norm_buffers(); }

int64_t SegmentTask::micro_batches_per_epoch() { return loader_->batches_per_epoch(); }

void SegmentTask::start_epoch(int64_t epoch, int64_t skip) { loader_->start_epoch(epoch, skip); }

MicroStep SegmentTask::forward_micro() {
  const Batch b = loader_->next_in_epoch();
  return forward_batch(b.image, b.mask);
}

MicroStep SegmentTask::forward_batch(const torch::Tensor& images, const torch::Tensor& masks) {
  model_->train();
  auto x = images.to(device_, true);
  auto y = masks.to(device_, true);
  if (y.dim() == 4) y = y.squeeze(1);
  UperNetOutput out;
  {
    Autocast ac(autocast_on(), device_.type());
    out = model_->forward_train(x);
  }
  MicroStep ms;
  ms.loss = segmentation_loss(out.logits.to(torch::kFloat32), y, opts_.loss);
  if (out.aux.defined() && opts_.aux_weight > 0) {
    auto aux = segmentation_loss(out.aux.to(torch::kFloat32), y, SegLossOptions());
    ms.logs["aux_loss"] = aux.item<double>();
    ms.loss = ms.loss + opts_.aux_weight * aux;
  }
  ms.samples = x.size(0);
  return ms;
}

SegPrediction segment_predict_image(UperNetImpl& model, const SegmenterSpec& spec,
                                    const cv::Mat& unit, const torch::Device& device,
                                    bool autocast) {
  torch::NoGradGuard ng;
  model.eval();
  const int64_t h0 = unit.rows, w0 = unit.cols;
  torch::Tensor img = unit_to_tensor(unit);
  const int64_t size = spec.net.img_size();
  img = spec.keep_ratio ? resize_keep_ratio(img, size, size, Interp::kBilinear)
                        : resize(img, size, size, Interp::kBilinear);
  auto x = normalize(img, spec.mean, spec.std).unsqueeze(0).to(device);
  auto forward = [&](const torch::Tensor& in) {
    Autocast ac(autocast, device.type());
    return model.forward(in).to(torch::kFloat32);
  };
  torch::Tensor logits = seg_inference_logits(forward, x, spec.inference);  // (1, C, h, w)
  logits = seg_resize_logits(logits, h0, w0).cpu();
  SegPrediction p;
  p.classes = seg_logits_to_classes(logits, spec.inference.threshold())[0];
  p.probs = (logits.size(1) == 1 ? torch::sigmoid(logits) : torch::softmax(logits, 1))[0];
  return p;
}

namespace {

// Sums the totals over ranks and concatenates the per-image Dice lists in rank order (ranks hold
// ceil(n / world) or one fewer images: the lists are padded to one length for the gather).
void seg_metrics_all_reduce(SegMetrics& m, Comm& comm) {
  std::vector<int64_t> t = m.totals();
  auto tt = torch::tensor(t, torch::kInt64);
  std::vector<at::Tensor> v{tt};
  comm.all_reduce_sum(v);
  const std::vector<double>& d = m.image_dice();
  const int64_t len = static_cast<int64_t>(d.size());
  const int64_t max_len = static_cast<int64_t>(comm.all_reduce_max(static_cast<double>(len)));
  auto padded = torch::full({max_len}, std::nan(""), torch::kFloat64);
  if (len > 0) padded.narrow(0, 0, len).copy_(torch::tensor(d, torch::kFloat64));
  auto lens = comm.all_gather(torch::tensor({len}, torch::kInt64)).cpu();
  auto all = comm.all_gather(padded.to(comm.device())).cpu();
  std::vector<double> joined;
  for (int r = 0; r < comm.world_size(); ++r) {
    auto part = all[r].narrow(0, 0, lens[r][0].item<int64_t>()).contiguous();
    joined.insert(joined.end(), part.data_ptr<double>(), part.data_ptr<double>() + part.numel());
  }
  auto summed = v[0].cpu().contiguous();
  m.set_totals(std::vector<int64_t>(summed.data_ptr<int64_t>(),
                                    summed.data_ptr<int64_t>() + summed.numel()));
  m.set_image_dice(joined);
}

}  // namespace

SegMetricsResult SegmentTask::evaluate_split(const std::string& split,
                                             std::vector<SegImageScore>* per_image) {
  auto it = splits_.find(split);
  if (it == splits_.end()) raise<ConfigError>("unknown split '", split, "' (train, val or test)");
  const Manifest& rows = it->second;
  if (rows.size() == 0) raise<DataError>("the data has no rows in split '", split, "'");
  const SegmenterSpec sp = spec();
  SegMetrics acc(opts_.classes, kSegIgnoreIndex);
  // Each rank scores every world-th image (no sampler padding: each image counted once).
  for (int64_t i = rank_; i < rows.size(); i += world_) {
    const ManifestRow& row = rows.rows[static_cast<size_t>(i)];
    if (row.mask.empty())
      raise<DataError>(rows.file, ":", row.line, ": row '", row.path, "' has no mask");
    cv::Mat unit = image_read_unit(row.path, {});
    torch::Tensor label = read_mask(row).contiguous();
    SegPrediction p = segment_predict_image(*model_, sp, unit, device_, autocast_on());
    torch::Tensor pred = p.classes.contiguous();
    acc.add(pred.data_ptr<uint8_t>(), pred.size(0), pred.size(1), label.data_ptr<uint8_t>(),
            label.size(0), label.size(1));
  }
  // Per-image rows in rank order of images: rank r holds images r, r + world, ...
  const size_t fg = opts_.classes.size() - 1;
  if (comm_ && world_ > 1) seg_metrics_all_reduce(acc, *comm_);
  if (per_image) {
    per_image->clear();
    const std::vector<double>& all = acc.image_dice();
    // The gathered list is rank-major; map it back to manifest order.
    std::vector<int64_t> order;
    for (int r = 0; r < world_; ++r)
      for (int64_t i = r; i < rows.size(); i += world_) order.push_back(i);
    std::vector<SegImageScore> scores(static_cast<size_t>(rows.size()));
    for (size_t k = 0; k < order.size(); ++k) {
      SegImageScore& s = scores[static_cast<size_t>(order[k])];
      s.id = rows.rows[static_cast<size_t>(order[k])].path;
      s.dice.assign(all.begin() + static_cast<std::ptrdiff_t>(k * fg),
                    all.begin() + static_cast<std::ptrdiff_t>((k + 1) * fg));
    }
    *per_image = std::move(scores);
  }
  return acc.compute();
}

SegmentTask::RowPrediction SegmentTask::predict_row(const std::string& split, int64_t index) {
  auto it = splits_.find(split);
  if (it == splits_.end()) raise<ConfigError>("unknown split '", split, "' (train, val or test)");
  const Manifest& rows = it->second;
  EVAX_ASSERT(index >= 0 && index < rows.size(), "row ", index, " of split ", split);
  const ManifestRow& row = rows.rows[static_cast<size_t>(index)];
  RowPrediction r;
  r.path = row.path;
  r.unit = image_read_unit(row.path, {});
  r.label = read_mask(row);
  r.pred = segment_predict_image(*model_, spec(), r.unit, device_, autocast_on());
  return r;
}

std::map<std::string, double> SegmentTask::evaluate(int64_t epoch) {
  (void)epoch;
  SegMetricsResult r = evaluate_split(opts_.eval_split);
  std::map<std::string, double> out;
  out["mDice"] = r.mdice;
  out["mIoU"] = r.miou;
  out["mDice_fg"] = r.mdice_fg;
  out["mIoU_fg"] = r.miou_fg;
  out["aAcc"] = r.aacc;
  for (size_t c = 0; c < opts_.classes.size(); ++c) {
    out["dice/" + opts_.classes[c]] = r.dice[c];
    out["iou/" + opts_.classes[c]] = r.iou[c];
  }
  return out;
}

TensorMap SegmentTask::model_state() {
  TensorMap sd = model_->state_dict_mmseg();
  for (auto& kv : sd) kv.second = kv.second.detach().cpu().clone();
  return sd;
}

void SegmentTask::load_model_state(const TensorMap& state) {
  model_->load_state_dict_mmseg(state, true);
}

nlohmann::json SegmentTask::run_identity() {
  return {{"model", opts_.model},
          {"depth", model_->backbone_depth()},
          {"img_size", opts_.net.img_size()},
          {"channels", opts_.net.channels()},
          {"classes", opts_.classes},
          {"batch_size", opts_.loader.batch_size},
          {"seed", opts_.loader.seed},
          {"images", train_.size()}};
}

SegmenterSpec SegmentTask::spec() const {
  SegmenterSpec s;
  s.model = opts_.model;
  s.net = opts_.net;
  s.net.depth(model_->backbone_depth());
  s.classes = opts_.classes;
  s.mean = opts_.augment.mean;
  s.std = opts_.augment.std;
  s.keep_ratio = opts_.keep_ratio;
  s.inference = opts_.inference;
  return s;
}

}  // namespace evax
