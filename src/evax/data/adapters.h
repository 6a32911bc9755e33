// Dataset adapters: turn each public chest X-ray dataset's official metadata into one manifest CSV
// (format: data_manifests/README.md), plus the merged pretraining manifest.
//
// Every adapter reads a dataset root laid out as the official download unpacks, writes `out`
// atomically and returns counts. Image paths are written relative to the manifest's folder when
// the image lies under it, else absolute. Labels are 1, 0 or empty (missing; never written as 0).
// Parse errors are DataErrors naming file:line and the bad value. Every metadata file (CSV or
// list) may also be given gzipped, as `<name>.gz` (MIMIC-CXR ships .csv.gz).
//
// Example:
//   CheXpertOptions o;
//   o.root = "/data/CheXpert-v1.0-small";
//   o.out = "manifests/chexpert.csv";
//   o.frontal_only = true;
//   ManifestSummary s = build_chexpert_manifest(o);
//   merge_pretrain_manifests({"manifests/cxr14.csv", "manifests/chexpert.csv"}, "pretrain.csv");
#pragma once

#include <cstdint>
#include <map>
#include <opencv2/core.hpp>
#include <optional>
#include <string>
#include <vector>

namespace evax {

/// The 14 ChestX-ray14 findings in the order of the paper, the EVA-X split lists and the official
/// label set (Wang et al. 2017): Atelectasis, Cardiomegaly, ..., Pleural_Thickening, Hernia.
extern const std::vector<std::string> kCxr14Labels;
/// The 14 CheXpert observations in the order of the official train.csv columns.
extern const std::vector<std::string> kChexpertLabels;
/// The 5 CheXpert competition labels in EVA-X's output order.
extern const std::vector<std::string> kChexpertCompetitionLabels;

/// Options every adapter takes.
struct AdapterOptions {
  std::string root;  ///< dataset folder (as the official download unpacks)
  std::string out;   ///< manifest CSV to write (parent folders are created)
  /// Folder of the EVA-X split lists (`evax_splits/` or its per-dataset subfolder); "" = use the
  /// dataset's official splits. Supported by cxr14, covidx, siim and rsna.
  std::string split_lists;
  /// A referenced image that does not exist: false = DataError naming it, true = leave the row out.
  bool skip_missing_images = false;
  /// Split of the official validation set that EVA-X reports its numbers on (CheXpert valid.csv,
  /// COVIDx-4 val.txt). "test" (default) keeps it out of merged pretraining manifests.
  std::string eval_split = "test";
};

/// What an adapter wrote.
struct ManifestSummary {
  std::string out;          ///< the manifest written
  int64_t rows = 0;         ///< data rows written
  int64_t train = 0, val = 0, test = 0;  ///< rows per split
  int64_t skipped = 0;      ///< source records left out (view filter, not listed, missing image)
  int64_t masks = 0;        ///< mask PNGs written
};

/// ChestX-ray14 (NIH). Reads `Data_Entry_2017.csv` (or `Data_Entry_2017_v2020.csv`) with the
/// official `train_val_list.txt` (→ train) and `test_list.txt` (→ test); or, with split_lists,
/// EVA-X's `train_official.txt` / `val_official.txt` / `test_official.txt` (labels from the lists;
/// Data_Entry, when present, gives patient and view). Images are found by name anywhere under root
/// (`images/`, `images_001/images/`, ...). Columns: the 14 kCxr14Labels; patient = 8-digit id.
ManifestSummary build_cxr14_manifest(const AdapterOptions& options);

/// What CheXpert's uncertain (-1) labels become.
enum class UncertainPolicy {
  kOnes,    ///< U-Ones: 1
  kZeros,   ///< U-Zeros: 0
  kIgnore,  ///< missing (empty cell)
  kKeep,    ///< -1 kept in the manifest: the classifier's data.uncertain.* decides (and smooths)
};

/// CheXpert options.
struct CheXpertOptions : AdapterOptions {
  bool all_labels = false;  ///< the 14 kChexpertLabels instead of the 5 competition labels
  /// Policy for every label not in `uncertain`; unset = EVA-X's (LibAUC's) default: ones for
  /// Atelectasis and Edema, zeros for every other label.
  std::optional<UncertainPolicy> uncertain_default;
  std::map<std::string, UncertainPolicy> uncertain;  ///< per-label policy (kChexpertLabels names)
  bool frontal_only = false;   ///< keep only `Frontal/Lateral == Frontal` rows
  /// Write blank cells (observation not mentioned) as 0, as EVA-X trains; default: missing.
  bool blank_as_zero = false;
};

/// CheXpert (v1.0 or v1.0-small): root holds `train.csv` (→ train) and `valid.csv` (→
/// eval_split), or is the folder above that. The `Path` column's first folder (the dataset folder
/// name) is replaced by that folder. Patient = the `patientNNNNN` path component; view = AP/PA
/// for frontal rows (FRONTAL when blank), LATERAL otherwise.
ManifestSummary build_chexpert_manifest(const CheXpertOptions& options);

/// Parses a --uncertain value into `options`: comma-separated items, each a policy (`ones`,
/// `zeros`, `ignore`; sets the default) or `Label=policy`. UsageError for a bad item or label.
void parse_uncertain_spec(const std::string& spec, CheXpertOptions* options);

/// COVIDx options.
struct CovidxOptions : AdapterOptions {
  int version = 3;  ///< 3 (COVIDx9A, 3 classes) or 4 (COVIDx CXR-4, binary)
};

/// COVIDx CXR-3 / CXR-4. Lists are `patient_id filename class source` lines.
/// - v3: `train_COVIDx9A.txt` (→ train, images in train/) and `test_COVIDx9A.txt` (→ test,
///   images in test/), falling back to `train.txt`/`test.txt`; columns normal, pneumonia,
///   COVID-19 (one-hot).
/// - v4: `train.txt` (→ train), `val.txt` (→ eval_split, images in val/), optional `test.txt`
///   (→ test); columns negative, positive (one-hot).
/// With split_lists the list files are read from there (`covidx3/` subfolder or the folder itself).
ManifestSummary build_covidx_manifest(const CovidxOptions& options);

/// MIMIC-CXR-JPG for pretraining: `mimic-cxr-2.0.0-metadata.csv` + `mimic-cxr-2.0.0-split.csv`
/// (as shipped, .csv.gz, or unpacked) under root; PA and AP views only; split validate → val; patient = subject_id;
/// path = files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg. No label columns.
ManifestSummary build_mimic_manifest(const AdapterOptions& options);

/// Run-length encodings of masks (pixels numbered column-major, top to bottom then left to right).
enum class RleFormat {
  kAuto,      ///< by file: train-rle.csv relative, stage_2_train.csv standard
  kRelative,  ///< SIIM stage 1 (and EVA-X's train-rle.csv): starts count from the previous run's end
  kStandard,  ///< Kaggle standard: absolute 1-based starts, increasing
};

/// Options of the adapters that write masks.
struct MaskAdapterOptions : AdapterOptions {
  RleFormat rle = RleFormat::kAuto;  ///< SIIM: how EncodedPixels is encoded
  int64_t mask_size = 1024;     ///< side of the square masks (SIIM and RSNA images are 1024²)
  bool positives_only = false;  ///< without split lists: keep only images with a finding
};

/// SIIM-ACR pneumothorax: `train-rle.csv` (stage 1 or the stage-2 re-release; relative RLE) or
/// Kaggle's `stage_2_train.csv` (standard RLE), columns ImageId, EncodedPixels ("-1" = no
/// pneumothorax), under root; images (.dcm, .png or .jpg named ImageId) anywhere under root. Every
/// RLE row of an image is merged into one 0/255 PNG `<out folder>/masks/<ImageId>.png` (EVA-X kept
/// only the last one). Without split lists every image is train; with them, only the listed ones
/// (train.txt, test.txt). Columns: Pneumothorax, mask; patient = ImageId (the CSV has no patient).
ManifestSummary build_siim_manifest(const MaskAdapterOptions& options);

/// RSNA pneumonia: `stage_2_train_labels.csv` (or stage_1) (patientId, x, y, width, height, Target)
/// under root; images named patientId anywhere under root. All boxes of an image fill one 0/255
/// mask `<out folder>/masks/<patientId>.png` (pixels [x, x+w) × [y, y+h), rounded) and the boxes
/// column (`Pneumonia:x,y,w,h`). Split lists: train.txt, test.txt of patient ids.
/// Columns: Pneumonia, mask, boxes; patient = patientId.
ManifestSummary build_rsna_manifest(const MaskAdapterOptions& options);

/// Image-folder + mask-folder datasets (lung fields, Shenzhen).
struct SegPairsOptions : AdapterOptions {
  std::string images;              ///< explicit image folder ("" = detect the layout under root)
  std::vector<std::string> masks;  ///< explicit mask folders, merged (e.g. left and right lung)
  std::string split = "train";     ///< split of the explicit folders
};

/// Pairs images with masks and writes merged 0/255 masks to `<out folder>/masks/<stem>.png`.
/// A mask belongs to the image whose file stem equals its stem or is its longest prefix followed
/// by '_' or '-' (`CHNCXR_0001_0_mask.png`); all masks of an image, from every mask folder, are
/// merged (pixel > 0). Images without a mask are skipped (counted). Layouts found under root
/// (folder names case-insensitive):
/// - `<split>/{images,masks}` with split train, val (valid) or test  (EVA-X "Lung": Train/Images);
/// - `<split>` + `<split>_masks`                                     (EVA-X Shenzhen);
/// - `{images,CXR_png}` + `{masks,mask}` or `ManualMask/{leftMask,rightMask}`, all train
///   (Montgomery; Shenzhen with the Kaggle lung masks).
/// Patient = image stem. No label columns.
ManifestSummary build_lung_manifest(const SegPairsOptions& options);
/// Same as build_lung_manifest (Shenzhen's EVA-X layout is `train`, `train_masks`, `test`, ...).
ManifestSummary build_shenzhen_manifest(const SegPairsOptions& options);

/// NIH `BBox_List_2017.csv` (Image Index, Finding Label, `Bbox [x`, y, w, `h]`) → a boxes manifest
/// for Grad-CAM localisation: one row per image, split test, `boxes` = all its boxes. The label
/// "Infiltrate" is written as the CXR14 column name "Infiltration". Data_Entry, when present under
/// root, gives the view. Images are found by name under root as for CXR14.
ManifestSummary build_nih_bbox_manifest(const AdapterOptions& options);

/// Counts of one input of merge_pretrain_manifests.
struct MergeSourceCounts {
  std::string source;           ///< name used as patient prefix (the input's file stem)
  std::string file;             ///< the input manifest
  int64_t rows = 0;             ///< rows read
  int64_t kept = 0;             ///< rows written
  int64_t dropped_test = 0;     ///< test rows, and rows sharing a path or a patient with one
  int64_t dropped_lateral = 0;  ///< non-frontal views
  int64_t dropped_duplicate = 0;  ///< paths already written from an earlier row
};

/// What merge_pretrain_manifests wrote.
struct MergeSummary {
  std::vector<MergeSourceCounts> sources;  ///< one per input, in order
  int64_t kept = 0;                        ///< rows written
};

/// Concatenates manifests into one pretraining manifest (path, split, patient_id, view; no labels).
/// Drops, in this order of precedence: every test row; every row whose image is a test image of any
/// input (same absolute path) or whose patient has a test image in the same input; every view
/// other than PA, AP, FRONTAL or unknown; repeated paths. Patients become `<source>/<id>` so that
/// ids of different datasets never merge. Logs the counts per input.
MergeSummary merge_pretrain_manifests(const std::vector<std::string>& inputs,
                                      const std::string& out);

// ---- Building blocks (exposed for tests and other tools) ----------------------------------------

/// One field as CSV text: quoted (with doubled quotes) when it holds a comma, quote, line break or
/// leading/trailing blank.
std::string csv_quote(const std::string& field);

/// `file` as a manifest at `manifest` writes it: relative to the manifest's folder when under it
/// (generic separators), else absolute.
std::string manifest_path_for(const std::string& manifest, const std::string& file);

/// One line of an EVA-X CXR14 split list: `<png name> <14 labels 0/1>`.
struct Cxr14ListEntry {
  std::string image;          ///< file name, e.g. 00000001_000.png
  std::vector<float> labels;  ///< 14 values in kCxr14Labels order
  int64_t line = 0;
};
/// Reads an EVA-X CXR14 split list; DataError (file:line, value) for a bad line or duplicate.
std::vector<Cxr14ListEntry> read_cxr14_split_list(const std::string& path);

/// One line of a COVIDx list: `patient_id filename class source`.
struct CovidxEntry {
  std::string patient_id, filename, label, source;
  int64_t line = 0;
};
/// Reads a COVIDx list (exactly 4 space-separated fields per line; the class is not checked here).
std::vector<CovidxEntry> read_covidx_list(const std::string& path);

/// One id per line (CXR14 official lists, EVA-X siim/rsna lists; a missing final newline is fine).
/// DataError for a line with more than one token or a repeated id.
std::vector<std::string> read_id_list(const std::string& path);

/// Decodes an RLE of pairs `start length` (see RleFormat; relative by default, as SIIM stage 1),
/// pixels numbered column-major, into `mask` (CV_8U, width x height), setting the run pixels to
/// 255 (OR with what is there). DataError naming `where` for an odd count, a non-integer or
/// negative number, a run past the image, or standard starts that are 0 or do not increase.
void rle_decode_into(const std::string& rle, cv::Mat& mask, const std::string& where,
                     RleFormat format = RleFormat::kRelative);
/// Encodes the non-zero pixels of a CV_8U mask as a SIIM relative RLE ("-1" when empty).
std::string rle_encode(const cv::Mat& mask);

}  // namespace evax
