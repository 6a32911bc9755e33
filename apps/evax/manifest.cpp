// evax manifest: build a manifest CSV from a dataset's official files, or merge manifests into one
// pretraining manifest.
#include <iostream>
#include <string>
#include <vector>

#include "commands.h"
#include "evax/core/error.h"
#include "evax/core/log.h"
#include "evax/data/adapters.h"

namespace evax::app {

namespace {

const char* const kDatasets[][2] = {
    {"cxr14", "ChestX-ray14: Data_Entry_2017.csv + official lists, or EVA-X lists"},
    {"chexpert", "CheXpert: train.csv (train) + valid.csv (--eval-split)"},
    {"covidx", "COVIDx CXR-3 (3 classes) or CXR-4 (binary) list files"},
    {"mimic", "MIMIC-CXR-JPG metadata + split CSVs, PA/AP only (pretraining)"},
    {"siim", "SIIM-ACR pneumothorax train-rle.csv or stage_2_train.csv -> mask PNGs"},
    {"rsna", "RSNA pneumonia stage_2_train_labels.csv -> boxes + mask PNGs"},
    {"lung", "lung fields: image folder(s) + mask folder(s)"},
    {"shenzhen", "Shenzhen: train, train_masks, test, test_masks"},
    {"nih-bbox", "NIH BBox_List_2017.csv -> boxes manifest for Grad-CAM"},
    {"merge", "merge manifests into a pretraining manifest (no test images, frontal only)"},
};

void print_usage() {
  std::cout << "usage: evax manifest <dataset> --root DIR --out FILE [options]\n"
               "       evax manifest merge --out FILE IN1 IN2 ...\n\n"
               "Build a manifest CSV (data_manifests/README.md) from a dataset's official\n"
               "files.\n\ndatasets:\n";
  for (const auto& d : kDatasets) {
    const std::string name = d[0];
    std::cout << "  " << name << std::string(12 - name.size(), ' ') << d[1] << "\n";
  }
  std::cout << "\n`evax manifest <dataset> --help` shows a dataset's options.\n";
}

void log_summary(const char* dataset, const ManifestSummary& s) {
  log_info(dataset, ": wrote ", s.rows, " rows to ", s.out, " (train ", s.train, ", val ", s.val,
           ", test ", s.test, ")", s.skipped ? str_cat(", left out ", s.skipped, " records") : "",
           s.masks ? str_cat(", ", s.masks, " masks") : "");
}

// Declares the options every dataset takes.
void add_common(ArgParser& p, AdapterOptions& o, bool lists, bool eval_split,
                bool root_required = true) {
  p.option("--root", &o.root, "DIR", "dataset folder (as the official download unpacks)");
  if (root_required) p.required();
  p.option("--out", &o.out, "FILE", "manifest CSV to write").required();
  if (lists)
    p.option("--split-lists", &o.split_lists, "DIR",
             "EVA-X split lists (evax_splits/ or its dataset subfolder) instead of the official "
             "splits");
  if (eval_split)
    p.option("--eval-split", &o.eval_split, "SPLIT",
             "split the official validation set is written as: test (default, as EVA-X evaluates "
             "on it), val or train");
  p.flag("--skip-missing", &o.skip_missing_images,
         "leave out rows whose image is missing instead of failing");
}

int run_merge(const Args& args) {
  // Inputs are free positionals; ArgParser takes a fixed number, so split them off here.
  std::string out, dummy;
  Args rest;
  std::vector<std::string> inputs;
  bool only_inputs = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!only_inputs && a == "--") {
      only_inputs = true;
    } else if (only_inputs || a.empty() || a[0] != '-') {
      inputs.push_back(a);
    } else {
      rest.push_back(a);
      if (a == "--out" && i + 1 < args.size()) rest.push_back(args[++i]);
    }
  }
  ArgParser p("manifest merge",
              "Concatenate manifests into one pretraining manifest (path, split, patient_id,\n"
              "view). Drops every test image of any input (by path, and by patient within an\n"
              "input), every non-frontal view and repeated paths; logs the counts per input.");
  p.positional("IN...", &dummy, "input manifests");
  p.option("--out", &out, "FILE", "merged manifest to write").required();
  if (!p.parse(rest)) return 0;
  if (inputs.empty()) raise<UsageError>("evax manifest merge: no input manifests given");
  merge_pretrain_manifests(inputs, out);
  return 0;
}

}  // namespace

int cmd_manifest(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    print_usage();
    return args.empty() ? static_cast<int>(ExitCode::kUsage) : 0;
  }
  const std::string dataset = args[0];
  const Args rest(args.begin() + 1, args.end());
  const std::string cmd = "manifest " + dataset;
  if (dataset == "merge") return run_merge(rest);

  if (dataset == "cxr14" || dataset == "mimic" || dataset == "nih-bbox") {
    AdapterOptions o;
    ArgParser p(cmd, dataset == "cxr14"
                         ? "ChestX-ray14 -> manifest with the 14 findings, patient, view (PA/AP)\n"
                           "and split: official train_val_list.txt (train) / test_list.txt\n"
                           "(test), or EVA-X's train/val/test_official.txt with --split-lists."
                     : dataset == "mimic"
                         ? "MIMIC-CXR-JPG -> pretraining manifest: PA/AP views, official split\n"
                           "(validate -> val), patient = subject_id, no labels."
                         : "NIH BBox_List_2017.csv -> boxes manifest (one row per image, split\n"
                           "test) for Grad-CAM localisation.");
    add_common(p, o, dataset == "cxr14", false);
    if (!p.parse(rest)) return 0;
    const ManifestSummary s = dataset == "cxr14"   ? build_cxr14_manifest(o)
                              : dataset == "mimic" ? build_mimic_manifest(o)
                                                   : build_nih_bbox_manifest(o);
    log_summary(dataset.c_str(), s);
    return 0;
  }
  if (dataset == "chexpert") {
    CheXpertOptions o;
    std::string labels = "competition";
    std::vector<std::string> uncertain;
    ArgParser p(cmd,
                "CheXpert -> manifest: train.csv (train) and valid.csv (--eval-split). Uncertain\n"
                "(-1) labels follow --uncertain (default: EVA-X's ones for Atelectasis and Edema,\n"
                "zeros otherwise; keep writes -1 for the classifier's data.uncertain.* to resolve,\n"
                "smoothed labels included); blank labels stay missing unless --blank-as-zero.");
    add_common(p, o, false, true);
    p.option("--labels", &labels, "SET", "competition (the 5 EVA-X labels) or all (14)");
    p.option("--uncertain", &uncertain, "SPEC",
             "ones|zeros|ignore|keep, or per label: Cardiomegaly=ones,Edema=zeros");
    p.flag("--frontal-only", &o.frontal_only, "keep frontal images only");
    p.flag("--blank-as-zero", &o.blank_as_zero, "write blank labels as 0 (EVA-X training)");
    if (!p.parse(rest)) return 0;
    if (labels != "competition" && labels != "all")
      raise<UsageError>("evax ", cmd, ": --labels must be competition or all, got '", labels, "'");
    o.all_labels = labels == "all";
    for (const auto& u : uncertain) parse_uncertain_spec(u, &o);
    log_summary("chexpert", build_chexpert_manifest(o));
    return 0;
  }
  if (dataset == "covidx") {
    CovidxOptions o;
    int64_t version = 3;
    ArgParser p(cmd,
                "COVIDx -> manifest (one-hot class columns). v3: train/test_COVIDx9A.txt with\n"
                "images in train/ and test/ (normal, pneumonia, COVID-19); v4: train.txt, val.txt\n"
                "(--eval-split), test.txt (negative, positive).");
    add_common(p, o, true, true);
    p.option("--version", &version, "V", "COVIDx CXR version: 3 or 4");
    if (!p.parse(rest)) return 0;
    if (version != 3 && version != 4)
      raise<UsageError>("evax ", cmd, ": --version must be 3 or 4, got ", version);
    o.version = static_cast<int>(version);
    log_summary("covidx", build_covidx_manifest(o));
    return 0;
  }
  if (dataset == "siim" || dataset == "rsna") {
    MaskAdapterOptions o;
    ArgParser p(cmd, dataset == "siim"
                         ? "SIIM-ACR -> manifest with Pneumothorax label and merged mask PNGs\n"
                           "(<out folder>/masks/); EVA-X's train/test lists with --split-lists."
                         : "RSNA pneumonia -> manifest with Pneumonia label, boxes and box mask\n"
                           "PNGs (<out folder>/masks/); EVA-X's lists with --split-lists.");
    add_common(p, o, true, false);
    p.option("--mask-size", &o.mask_size, "S", "side of the square masks in pixels");
    p.flag("--positives-only", &o.positives_only,
           "without split lists: keep only images with a finding");
    std::string rle = "auto";
    if (dataset == "siim")
      p.option("--rle", &rle, "auto|relative|standard",
               "EncodedPixels encoding: relative (train-rle.csv), standard = Kaggle 1-based "
               "absolute starts (stage_2_train.csv); auto picks by file name");
    if (!p.parse(rest)) return 0;
    if (rle == "relative") o.rle = RleFormat::kRelative;
    else if (rle == "standard") o.rle = RleFormat::kStandard;
    else if (rle != "auto")
      raise<UsageError>("evax ", cmd, ": --rle must be auto, relative or standard, got '", rle,
                        "'");
    log_summary(dataset.c_str(),
                dataset == "siim" ? build_siim_manifest(o) : build_rsna_manifest(o));
    return 0;
  }
  if (dataset == "lung" || dataset == "shenzhen") {
    SegPairsOptions o;
    ArgParser p(cmd,
                "Image + mask folders -> segmentation manifest with merged mask PNGs.\n"
                "Layouts under --root: <split>/{Images,Masks}; <split> + <split>_masks;\n"
                "{images,CXR_png} + {masks,mask,ManualMask/{leftMask,rightMask}} (all train).\n"
                "A mask named like its image, or <image>_<anything>, belongs to it.");
    add_common(p, o, false, false, false);
    p.option("--images", &o.images, "DIR", "explicit image folder (instead of --root)");
    p.option("--masks", &o.masks, "DIR", "explicit mask folder, merged with the others");
    p.option("--split", &o.split, "SPLIT", "split of the explicit folders");
    if (!p.parse(rest)) return 0;
    if (o.images.empty() && o.root.empty())
      raise<UsageError>("evax ", cmd, ": give --root, or --images and --masks");
    log_summary(dataset.c_str(), dataset == "lung" ? build_lung_manifest(o)
                                                   : build_shenzhen_manifest(o));
    return 0;
  }
  std::string known;
  for (const auto& d : kDatasets) known += std::string(known.empty() ? "" : ", ") + d[0];
  raise<UsageError>("evax manifest: unknown dataset '", dataset, "' (known: ", known, ")");
}

}  // namespace evax::app
