#include "evax/data/adapters.h"

#include <zlib.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/data/manifest.h"
#include "evax/io/image.h"
#include "skip.h"
#include "test_util.h"

using Catch::Matchers::Contains;
using evax::DataError;
using evax::Manifest;
using evax::ManifestRow;
using evax::manifest_load;
using evax::test::TempDir;

namespace fs = std::filesystem;

namespace {

std::string write(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// A tiny image (content irrelevant to the adapters; they only locate files): PNG bytes whatever
// the extension.
std::string image(const std::string& path) {
  fs::create_directories(fs::path(path).parent_path());
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".dcm") return write(path, "not really DICOM");
  evax::image_write_png(path, cv::Mat(8, 8, CV_8U, cv::Scalar(128)));
  return path;
}

std::string norm(const std::string& p) { return fs::path(p).lexically_normal().string(); }

// The what() of the DataError `fn` throws, or "" when it throws none.
std::string data_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

const float kNaN = std::nanf("");

// Label vectors equal, NaN matching NaN.
bool same(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
  return true;
}

std::vector<float> cxr14(std::initializer_list<int> positives) {
  std::vector<float> v(14, 0.0f);
  for (int p : positives) v[static_cast<size_t>(p)] = 1.0f;
  return v;
}

// The raw cells of a written manifest (header included).
std::vector<std::vector<std::string>> cells(const std::string& csv) {
  std::vector<std::vector<std::string>> out;
  for (auto& r : evax::csv_parse(evax::read_file(csv), csv)) out.push_back(r.fields);
  return out;
}

// Pixels of a mask PNG that are 255; everything else must be 0.
std::set<std::pair<int, int>> on_pixels(const std::string& png) {
  const cv::Mat m = evax::image_decode(evax::read_file(png), png);
  REQUIRE(m.type() == CV_8U);
  std::set<std::pair<int, int>> on;
  for (int y = 0; y < m.rows; ++y)
    for (int x = 0; x < m.cols; ++x) {
      const int v = m.at<uint8_t>(y, x);
      REQUIRE((v == 0 || v == 255));
      if (v) on.insert({y, x});
    }
  return on;
}

std::set<std::pair<int, int>> rect(int x, int y, int w, int h) {
  std::set<std::pair<int, int>> s;
  for (int r = y; r < y + h; ++r)
    for (int c = x; c < x + w; ++c) s.insert({r, c});
  return s;
}

// ---- Fixtures -----------------------------------------------------------------------------------

const std::string kDataEntryHeader =
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n";

// ChestX-ray14 root: 4 images spread over two image folders, Data_Entry and the official lists.
void make_cxr14(const std::string& root, const std::string& entry_rows = "") {
  write(root + "/Data_Entry_2017.csv",
        kDataEntryHeader +
            (entry_rows.empty()
                 ? "00000001_000.png,Cardiomegaly|Emphysema,0,1,58,M,PA,2682,2749,0.143,0.143,\n"
                   "00000001_001.png,No Finding,1,1,58,M,AP,2894,2729,0.143,0.143\n"
                   "00000003_000.png,Hernia,0,3,81,F,PA,2582,2991,0.143,0.143\n"
                   "00000005_000.png,Infiltration|Nodule,0,5,69,F,AP,2048,2500,0.168,0.168\n"
                 : entry_rows));
  write(root + "/train_val_list.txt", "00000001_000.png\n00000001_001.png\n00000005_000.png\n");
  write(root + "/test_list.txt", "00000003_000.png");
  image(root + "/images_001/images/00000001_000.png");
  image(root + "/images_001/images/00000001_001.png");
  image(root + "/images_002/images/00000003_000.png");
  image(root + "/images_002/images/00000005_000.png");
}

const std::string kChexpertHeader =
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
    "Pleural Effusion,Pleural Other,Fracture,Support Devices\n";

const std::string kChexpertTrain =
    kChexpertHeader +
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,"
    "1.0,,,,,,,,,0.0,,,,1.0\n"
    "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,"
    ",,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,\n"
    "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Female,83,Frontal,PA,"
    ",,,1.0,,,-1.0,,,,,,1.0,\n"
    "CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg,Female,83,Lateral,,"
    ",,,1.0,,,-1.0,,,,,,1.0,\n";

void make_chexpert(const std::string& root, const std::string& train = kChexpertTrain) {
  const std::string d = root + "/CheXpert-v1.0-small";
  write(d + "/train.csv", train);
  write(d + "/valid.csv",
        kChexpertHeader +
            "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,"
            "0.0,1.0,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0\n");
  for (const char* p : {"train/patient00001/study1/view1_frontal.jpg",
                        "train/patient00002/study2/view1_frontal.jpg",
                        "train/patient00002/study1/view1_frontal.jpg",
                        "train/patient00002/study1/view2_lateral.jpg",
                        "valid/patient64541/study1/view1_frontal.jpg"})
    image(d + "/" + p);
}

}  // namespace

// ---- Building blocks ----------------------------------------------------------------------------

TEST_CASE("adapters: csv_quote and manifest_path_for", "[adapters]") {
  CHECK(evax::csv_quote("plain") == "plain");
  CHECK(evax::csv_quote("") == "");
  CHECK(evax::csv_quote("a,b") == "\"a,b\"");
  CHECK(evax::csv_quote("say \"hi\"") == "\"say \"\"hi\"\"\"");
  CHECK(evax::csv_quote("two\nlines") == "\"two\nlines\"");
  CHECK(evax::csv_quote(" pad") == "\" pad\"");
  CHECK(evax::manifest_path_for("/data/m/x.csv", "/data/m/img/a.png") == "img/a.png");
  CHECK(evax::manifest_path_for("/data/m/x.csv", "/data/m/./img/../b.png") == "b.png");
  CHECK(evax::manifest_path_for("/data/m/x.csv", "/data/other/a.png") == "/data/other/a.png");
  CHECK(evax::manifest_path_for("/data/m/x.csv", "/data/mm/a.png") == "/data/mm/a.png");
}

TEST_CASE("adapters: list readers and their errors", "[adapters]") {
  TempDir dir("adapters");
  const auto ids = evax::read_id_list(write(dir / "ids.txt", "a\r\nb\n\nc"));
  CHECK(ids == std::vector<std::string>{"a", "b", "c"});
  CHECK_THAT(data_error([&] { evax::read_id_list(write(dir / "two.txt", "a\nb c\n")); }),
             Contains("two.txt:2") && Contains("'b c'"));
  CHECK_THAT(data_error([&] { evax::read_id_list(write(dir / "dup.txt", "a\nb\na\n")); }),
             Contains("dup.txt:3") && Contains("'a' repeated") && Contains("line 1"));
  CHECK_THAT(data_error([&] { evax::read_id_list(dir / "absent.txt"); }), Contains("absent.txt"));

  const auto cx = evax::read_cxr14_split_list(
      write(dir / "c.txt", "00000001_001.png 0 1 0 0 0 0 0 0 0 0 1 0 0 0\n"));
  REQUIRE(cx.size() == 1);
  CHECK(cx[0].image == "00000001_001.png");
  CHECK(cx[0].line == 1);
  CHECK(same(cx[0].labels, cxr14({1, 10})));
  CHECK_THAT(data_error([&] {
               evax::read_cxr14_split_list(
                   write(dir / "c2.txt", "a.png 0 1 0 0 0 0 0 0 0 0 1 0 0\n"));
             }),
             Contains("c2.txt:1") && Contains("14 fields"));
  CHECK_THAT(data_error([&] {
               evax::read_cxr14_split_list(
                   write(dir / "c3.txt", "\na.png 0 1 0 0 0 0 0 0 0 0 1 0 0 2\n"));
             }),
             Contains("c3.txt:2") && Contains("Hernia") && Contains("'2'"));

  const auto cv = evax::read_covidx_list(write(dir / "v.txt", "3 a.jpeg pneumonia cohen\n"));
  REQUIRE(cv.size() == 1);
  CHECK(cv[0].patient_id == "3");
  CHECK(cv[0].filename == "a.jpeg");
  CHECK(cv[0].label == "pneumonia");
  CHECK(cv[0].source == "cohen");
  CHECK_THAT(data_error([&] { evax::read_covidx_list(write(dir / "v2.txt", "1 a b c\n3 a b\n")); }),
             Contains("v2.txt:2") && Contains("3 fields") && Contains("'3 a b'"));
}

TEST_CASE("adapters: SIIM relative RLE decodes column-major and round-trips", "[adapters]") {
  cv::Mat m = cv::Mat::zeros(4, 3, CV_8U);  // 4 rows, 3 columns
  // Runs at pixels 1-2 (column 0, rows 1-2), then 3 after the run's end: 6 (column 1, row 2).
  evax::rle_decode_into("1 2 3 1", m, "here: ");
  std::set<std::pair<int, int>> on;
  for (int y = 0; y < m.rows; ++y)
    for (int x = 0; x < m.cols; ++x)
      if (m.at<uint8_t>(y, x)) on.insert({y, x});
  CHECK(on == std::set<std::pair<int, int>>{{1, 0}, {2, 0}, {2, 1}});
  CHECK(evax::rle_encode(m) == "1 2 3 1");
  CHECK(evax::rle_encode(cv::Mat::zeros(4, 3, CV_8U)) == "-1");
  cv::Mat full = cv::Mat(4, 3, CV_8U, cv::Scalar(255));
  CHECK(evax::rle_encode(full) == "0 12");

  cv::Mat t = cv::Mat::zeros(4, 3, CV_8U);
  CHECK_THAT(data_error([&] { evax::rle_decode_into("1 2 3", t, "f.csv:7: "); }),
             Contains("f.csv:7") && Contains("odd"));
  CHECK_THAT(data_error([&] { evax::rle_decode_into("1 x", t, "f.csv:7: "); }),
             Contains("'x'"));
  CHECK_THAT(data_error([&] { evax::rle_decode_into("1 -2", t, "f.csv:7: "); }),
             Contains("'-2'"));
  CHECK_THAT(data_error([&] { evax::rle_decode_into("11 2", t, "f.csv:7: "); }),
             Contains("past the 12 pixels"));
}

// ---- ChestX-ray14 -------------------------------------------------------------------------------

TEST_CASE("adapters: cxr14 from Data_Entry and the official lists", "[adapters]") {
  TempDir dir("adapters");
  const std::string root = dir / "nih";
  make_cxr14(root);
  evax::AdapterOptions o;
  o.root = root;
  o.out = dir / "out/cxr14.csv";
  const auto s = evax::build_cxr14_manifest(o);
  CHECK(s.rows == 4);
  CHECK(s.train == 3);
  CHECK(s.test == 1);
  CHECK(s.skipped == 0);
  const Manifest m = manifest_load(o.out);
  CHECK(m.label_names == evax::kCxr14Labels);
  REQUIRE(m.size() == 4);
  CHECK(m.rows[0].path == norm(root + "/images_001/images/00000001_000.png"));
  CHECK(m.rows[0].split == "train");
  CHECK(m.rows[0].patient_id == "00000001");
  CHECK(m.rows[0].view == "PA");
  CHECK(same(m.rows[0].labels, cxr14({1, 10})));
  CHECK(m.rows[1].view == "AP");
  CHECK(same(m.rows[1].labels, cxr14({})));
  CHECK(m.rows[2].split == "test");
  CHECK(m.rows[2].patient_id == "00000003");
  CHECK(same(m.rows[2].labels, cxr14({13})));
  CHECK(m.rows[3].path == norm(root + "/images_002/images/00000005_000.png"));
  CHECK(same(m.rows[3].labels, cxr14({3, 5})));

  SECTION("a manifest inside the root gets relative paths") {
    o.out = root + "/cxr14.csv";
    evax::build_cxr14_manifest(o);
    CHECK(cells(o.out)[1][0] == "images_001/images/00000001_000.png");
    CHECK(manifest_load(o.out).rows[0].path == m.rows[0].path);
  }
  SECTION("a missing image is an error, or skipped") {
    fs::remove(root + "/images_002/images/00000005_000.png");
    CHECK_THAT(data_error([&] { evax::build_cxr14_manifest(o); }),
               Contains("Data_Entry_2017.csv:5") && Contains("'00000005_000.png' not found"));
    o.skip_missing_images = true;
    const auto s2 = evax::build_cxr14_manifest(o);
    CHECK(s2.rows == 3);
    CHECK(s2.skipped == 1);
  }
}

TEST_CASE("adapters: cxr14 errors name file:line and value", "[adapters]") {
  TempDir dir("adapters");
  const std::string root = dir / "nih";
  evax::AdapterOptions o;
  o.root = root;
  o.out = dir / "out.csv";
  const auto err = [&](const std::string& rows) {
    make_cxr14(root, rows);
    return data_error([&] { evax::build_cxr14_manifest(o); });
  };
  CHECK_THAT(err("00000001_000.png,Cardiomegaly|Flu,0,1,58,M,PA,1,1,1,1\n"),
             Contains("Data_Entry_2017.csv:2") && Contains("unknown finding 'Flu'"));
  CHECK_THAT(err("00000001_000.png,No Finding|Mass,0,1,58,M,PA,1,1,1,1\n"),
             Contains("Data_Entry_2017.csv:2") && Contains("No Finding"));
  CHECK_THAT(err("00000001_000.png,Mass,0,x1,58,M,PA,1,1,1,1\n"),
             Contains("Data_Entry_2017.csv:2") && Contains("'x1'"));
  CHECK_THAT(err("00000001_000.png,Mass,0,1,58,M,PA,1,1,1,1\n00000009_000.png,Mass,0,9,5,M,PA\n"),
             Contains("Data_Entry_2017.csv:3") && Contains("neither"));
  CHECK_THAT(err("00000001_000.png,Mass,0\n"),
             Contains("Data_Entry_2017.csv:2") && Contains("Patient ID"));
  write(root + "/Data_Entry_2017.csv", "Image Index,Labels\n");
  CHECK_THAT(data_error([&] { evax::build_cxr14_manifest(o); }),
             Contains("Data_Entry_2017.csv:1") && Contains("missing column 'Finding Labels'"));
  fs::remove(root + "/Data_Entry_2017.csv");
  CHECK_THAT(data_error([&] { evax::build_cxr14_manifest(o); }), Contains("Data_Entry_2017.csv"));
}

TEST_CASE("adapters: cxr14 from EVA-X split lists", "[adapters]") {
  TempDir dir("adapters");
  const std::string root = dir / "nih";
  make_cxr14(root);
  const std::string lists = dir / "splits";
  write(lists + "/cxr14/train_official.txt",
        "00000001_000.png 0 1 0 0 0 0 0 0 0 0 1 0 0 0\n"
        "00000001_001.png 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n");
  write(lists + "/cxr14/val_official.txt", "00000005_000.png 0 0 0 1 0 1 0 0 0 0 0 0 0 0\n");
  write(lists + "/cxr14/test_official.txt", "00000003_000.png 0 0 0 0 0 0 0 0 0 0 0 0 0 1\n");
  evax::AdapterOptions o;
  o.root = root;
  o.out = dir / "out/cxr14.csv";
  o.split_lists = lists;  // the evax_splits folder itself; cxr14/ is found below it
  auto s = evax::build_cxr14_manifest(o);
  CHECK(s.train == 2);
  CHECK(s.val == 1);
  CHECK(s.test == 1);
  Manifest m = manifest_load(o.out);
  REQUIRE(m.size() == 4);
  CHECK(m.rows[2].split == "val");
  CHECK(m.rows[2].patient_id == "00000005");
  CHECK(m.rows[2].view == "AP");  // from Data_Entry
  CHECK(same(m.rows[2].labels, cxr14({3, 5})));
  CHECK(m.rows[3].split == "test");

  // Without Data_Entry: patient from the file name, view unknown; lists given as the subfolder.
  fs::remove(root + "/Data_Entry_2017.csv");
  o.split_lists = lists + "/cxr14";
  evax::build_cxr14_manifest(o);
  m = manifest_load(o.out);
  CHECK(m.rows[0].patient_id == "00000001");
  CHECK(m.rows[0].view == "");
  CHECK(cells(o.out)[1][3] == "");

  write(lists + "/cxr14/test_official.txt", "00000001_001.png 0 0 0 0 0 0 0 0 0 0 0 0 0 1\n");
  CHECK_THAT(data_error([&] { evax::build_cxr14_manifest(o); }),
             Contains("test_official.txt:1") && Contains("train_official.txt:2"));
  o.split_lists = dir / "nowhere";
  CHECK_THAT(data_error([&] { evax::build_cxr14_manifest(o); }),
             Contains("train_official.txt") && Contains("nowhere"));
}

// ---- CheXpert -----------------------------------------------------------------------------------

TEST_CASE("adapters: chexpert labels, uncertain policies, views and splits", "[adapters]") {
  TempDir dir("adapters");
  make_chexpert(dir / "data");
  evax::CheXpertOptions o;
  o.root = dir / "data";  // the folder above CheXpert-v1.0-small
  o.out = dir / "out/chexpert.csv";
  const std::string base = dir / "data/CheXpert-v1.0-small/";

  SECTION("defaults: 5 competition labels, EVA-X U-Ones/U-Zeros, blanks missing") {
    const auto s = evax::build_chexpert_manifest(o);
    CHECK(s.rows == 5);
    CHECK(s.train == 4);
    CHECK(s.test == 1);
    const Manifest m = manifest_load(o.out);
    CHECK(m.label_names == evax::kChexpertCompetitionLabels);
    REQUIRE(m.size() == 5);
    CHECK(m.rows[0].path == norm(base + "train/patient00001/study1/view1_frontal.jpg"));
    CHECK(m.rows[0].patient_id == "patient00001");
    CHECK(m.rows[0].view == "AP");
    CHECK(same(m.rows[0].labels, {kNaN, kNaN, kNaN, kNaN, kNaN}));
    CHECK(cells(o.out)[1] == std::vector<std::string>{m.rows[0].path, "train", "patient00001",
                                                      "AP", "", "", "", "", ""});
    // Atelectasis -1 → 1, Cardiomegaly -1 → 0, Consolidation -1 → 0, Edema -1 → 1, PE -1 → 0.
    CHECK(same(m.rows[1].labels, {1, 0, 0, 1, 0}));
    CHECK(m.rows[2].view == "PA");
    CHECK(same(m.rows[2].labels, {kNaN, kNaN, 0, kNaN, kNaN}));
    CHECK(m.rows[3].view == "LATERAL");
    CHECK(m.rows[3].patient_id == "patient00002");
    CHECK(m.rows[4].split == "test");
    CHECK(m.rows[4].patient_id == "patient64541");
    CHECK(same(m.rows[4].labels, {0, 1, 0, 0, 0}));
  }
  SECTION("per-label policy, frontal only, valid as val, dataset folder as root") {
    evax::parse_uncertain_spec("ignore,atelectasis=zeros", &o);
    o.frontal_only = true;
    o.eval_split = "val";
    o.root = base;
    const auto s = evax::build_chexpert_manifest(o);
    CHECK(s.rows == 4);
    CHECK(s.skipped == 1);
    CHECK(s.val == 1);
    const Manifest m = manifest_load(o.out);
    REQUIRE(m.size() == 4);
    CHECK(same(m.rows[1].labels, {0, kNaN, kNaN, kNaN, kNaN}));
    CHECK(same(m.rows[2].labels, {kNaN, kNaN, kNaN, kNaN, kNaN}));
    CHECK(m.rows[3].split == "val");
  }
  SECTION("all 14 labels, blank as zero") {
    o.all_labels = true;
    o.blank_as_zero = true;
    evax::parse_uncertain_spec("Cardiomegaly=ones", &o);
    evax::build_chexpert_manifest(o);
    const Manifest m = manifest_load(o.out);
    CHECK(m.label_names == evax::kChexpertLabels);
    CHECK(same(m.rows[0].labels, {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}));
    CHECK(same(m.rows[1].labels, {0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0}));
  }
  SECTION("keep: -1 stays in the manifest for the classifier's data.uncertain.* to resolve") {
    evax::parse_uncertain_spec("keep,Edema=ones", &o);
    evax::build_chexpert_manifest(o);
    CHECK(cells(o.out)[2][4] == "-1");  // Atelectasis of row 1
    CHECK_THROWS_WITH(manifest_load(o.out), Contains("uncertain label '-1'"));
    evax::ManifestOptions mo;
    mo.allow_uncertain = true;
    const Manifest m = manifest_load(o.out, mo);
    CHECK(same(m.rows[1].labels, {-1, -1, -1, 1, -1}));
    CHECK(same(m.rows[4].labels, {0, 1, 0, 0, 0}));  // valid.csv has no uncertain labels
  }
  SECTION("uncertain spec errors") {
    CHECK_THROWS_AS(evax::parse_uncertain_spec("maybe", &o), evax::UsageError);
    CHECK_THROWS_WITH(evax::parse_uncertain_spec("Flu=ones", &o), Contains("'Flu'"));
    CHECK_THROWS_WITH(evax::parse_uncertain_spec("Edema=half", &o), Contains("'half'"));
    CHECK_THROWS_AS(evax::parse_uncertain_spec("ones,,zeros", &o), evax::UsageError);
    o.uncertain["Flu"] = evax::UncertainPolicy::kOnes;
    CHECK_THROWS_AS(evax::build_chexpert_manifest(o), evax::ConfigError);
  }
}

TEST_CASE("adapters: chexpert errors name file:line and value", "[adapters]") {
  TempDir dir("adapters");
  evax::CheXpertOptions o;
  o.root = dir / "data";
  o.out = dir / "out.csv";
  const auto err = [&](const std::string& row) {
    make_chexpert(dir / "data", kChexpertHeader + row);
    return data_error([&] { evax::build_chexpert_manifest(o); });
  };
  const std::string p = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg";
  CHECK_THAT(err(p + ",F,1,Frontal,AP,,,2.0,,,,,,,,,,,\n"),
             Contains("train.csv:2") && Contains("'Cardiomegaly'") && Contains("'2.0'"));
  CHECK_THAT(err(p + ",F,1,Sideways,AP,,,,,,,,,,,,,,\n"),
             Contains("train.csv:2") && Contains("'Sideways'"));
  CHECK_THAT(err("CheXpert-v1.0-small/train/p1/study1/view1_frontal.jpg,F,1,Frontal,AP,,,,,,,,,,,"
                 ",,,\n"),
             Contains("train.csv:2") && Contains("patientNNNNN"));
  CHECK_THAT(err(p + ",F,1,Frontal,AP\n"), Contains("train.csv:2") && Contains("5 fields"));
  CHECK_THAT(err("CheXpert-v1.0-small/train/patient00009/study1/view1_frontal.jpg,F,1,Frontal,AP,"
                 ",,,,,,,,,,,,,\n"),
             Contains("train.csv:2") && Contains("does not exist"));
  fs::remove(dir / "data/CheXpert-v1.0-small/valid.csv");
  CHECK_THAT(data_error([&] { evax::build_chexpert_manifest(o); }), Contains("valid.csv"));
}

// ---- COVIDx -------------------------------------------------------------------------------------

TEST_CASE("adapters: covidx 3 and 4", "[adapters]") {
  TempDir dir("adapters");
  const std::string root = dir / "covidx";
  evax::CovidxOptions o;
  o.root = root;
  o.out = dir / "out/covidx.csv";

  SECTION("v3: three one-hot classes, train/ and test/ folders") {
    write(root + "/train_COVIDx9A.txt",
          "3 SARS-a.jpeg pneumonia cohen\n7 b.png COVID-19 ricord\n8 c.png normal rsna\n");
    write(root + "/test_COVIDx9A.txt", "419639-003251 d.png COVID-19 ricord\n");
    for (const char* f : {"train/SARS-a.jpeg", "train/b.png", "train/c.png", "test/d.png"})
      image(root + "/" + f);
    const auto s = evax::build_covidx_manifest(o);
    CHECK(s.train == 3);
    CHECK(s.test == 1);
    const Manifest m = manifest_load(o.out);
    CHECK(m.label_names == std::vector<std::string>{"normal", "pneumonia", "COVID-19"});
    REQUIRE(m.size() == 4);
    CHECK(m.rows[0].path == norm(root + "/train/SARS-a.jpeg"));
    CHECK(m.rows[0].patient_id == "3");
    CHECK(same(m.rows[0].labels, {0, 1, 0}));
    CHECK(same(m.rows[1].labels, {0, 0, 1}));
    CHECK(same(m.rows[2].labels, {1, 0, 0}));
    CHECK(m.rows[3].path == norm(root + "/test/d.png"));
    CHECK(m.rows[3].split == "test");
    CHECK(m.rows[3].patient_id == "419639-003251");

    // The same lists from an EVA-X split folder.
    const std::string lists = dir / "splits";
    fs::create_directories(lists);
    fs::rename(root + "/train_COVIDx9A.txt", lists + "/train_COVIDx9A.txt");
    fs::rename(root + "/test_COVIDx9A.txt", lists + "/test_COVIDx9A.txt");
    CHECK_THAT(data_error([&] { evax::build_covidx_manifest(o); }), Contains("train"));
    o.split_lists = lists;
    CHECK(evax::build_covidx_manifest(o).rows == 4);

    write(lists + "/test_COVIDx9A.txt", "1 d.png COVID-19 ricord\n2 d.png positive ricord\n");
    CHECK_THAT(data_error([&] { evax::build_covidx_manifest(o); }),
               Contains("test_COVIDx9A.txt:2") && Contains("'positive'"));
    write(lists + "/test_COVIDx9A.txt", "1 e.png COVID-19 ricord\n");
    CHECK_THAT(data_error([&] { evax::build_covidx_manifest(o); }),
               Contains("test_COVIDx9A.txt:1") && Contains("e.png"));
  }
  SECTION("v4: binary, val.txt is the evaluation split") {
    o.version = 4;
    write(root + "/train.txt", "p1 e.png positive bimcv\np2 f.png negative rsna\n");
    write(root + "/val.txt", "p3 g.png negative rsna\n");
    write(root + "/test.txt", "p4 h.png positive sirm\n");
    for (const char* f : {"train/e.png", "train/f.png", "val/g.png", "test/h.png"})
      image(root + "/" + f);
    const auto s = evax::build_covidx_manifest(o);
    CHECK(s.train == 2);
    CHECK(s.test == 2);
    const Manifest m = manifest_load(o.out);
    CHECK(m.label_names == std::vector<std::string>{"negative", "positive"});
    REQUIRE(m.size() == 4);
    CHECK(same(m.rows[0].labels, {0, 1}));
    CHECK(same(m.rows[1].labels, {1, 0}));
    CHECK(m.rows[2].path == norm(root + "/val/g.png"));
    CHECK(m.rows[2].split == "test");
    o.eval_split = "val";
    CHECK(evax::build_covidx_manifest(o).val == 1);
    write(root + "/val.txt", "p3 g.png normal rsna\n");
    CHECK_THAT(data_error([&] { evax::build_covidx_manifest(o); }),
               Contains("val.txt:1") && Contains("'normal'"));
    o.eval_split = "holdout";
    CHECK_THROWS_AS(evax::build_covidx_manifest(o), evax::ConfigError);
  }
}

// ---- MIMIC --------------------------------------------------------------------------------------

TEST_CASE("adapters: mimic keeps PA/AP with the official split", "[adapters]") {
  TempDir dir("adapters");
  const std::string root = dir / "mimic";
  const std::string tail = ",3056,2544,21800506,213014.531,CHEST,postero-anterior,Erect\n";
  write(root + "/mimic-cxr-2.0.0-metadata.csv",
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,"
        "StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
        "PatientOrientationCodeSequence_CodeMeaning\n"
        "d1,10000032,50414267,\"CHEST (PA AND LAT)\",PA" + tail +
        "d2,10000032,50414267,\"CHEST (PA AND LAT)\",LATERAL" + tail +
        "d3,10000764,57375967,CHEST (PORTABLE AP),AP" + tail +
        "d4,11000011,51111111,CHEST," + tail);
  write(root + "/mimic-cxr-2.0.0-split.csv",
        "dicom_id,study_id,subject_id,split\nd1,50414267,10000032,train\n"
        "d2,50414267,10000032,train\nd3,57375967,10000764,validate\nd4,51111111,11000011,test\n");
  image(root + "/files/p10/p10000032/s50414267/d1.jpg");
  image(root + "/files/p10/p10000764/s57375967/d3.jpg");
  evax::AdapterOptions o;
  o.root = root;
  o.out = root + "/mimic.csv";
  const auto s = evax::build_mimic_manifest(o);
  CHECK(s.rows == 2);
  CHECK(s.skipped == 2);
  const auto c = cells(o.out);
  CHECK(c[0] == std::vector<std::string>{"path", "split", "patient_id", "view"});
  CHECK(c[1] == std::vector<std::string>{"files/p10/p10000032/s50414267/d1.jpg", "train",
                                         "10000032", "PA"});
  CHECK(c[2] == std::vector<std::string>{"files/p10/p10000764/s57375967/d3.jpg", "val",
                                         "10000764", "AP"});
  CHECK(manifest_load(o.out).label_names.empty());

  fs::remove(root + "/files/p10/p10000764/s57375967/d3.jpg");
  CHECK_THAT(data_error([&] { evax::build_mimic_manifest(o); }),
             Contains("metadata.csv:4") && Contains("d3.jpg"));
  write(root + "/mimic-cxr-2.0.0-split.csv", "dicom_id,study_id,subject_id,split\nd1,5,1,dev\n");
  CHECK_THAT(data_error([&] { evax::build_mimic_manifest(o); }),
             Contains("split.csv:2") && Contains("'dev'"));
  write(root + "/mimic-cxr-2.0.0-split.csv", "dicom_id,study_id,subject_id,split\nd1,5,1,train\n");
  CHECK_THAT(data_error([&] { evax::build_mimic_manifest(o); }),
             Contains("metadata.csv:4") && Contains("'d3'"));
}

TEST_CASE("adapters: metadata as shipped in .csv.gz reads like the unpacked CSV", "[adapters]") {
  TempDir dir("adapters");
  const std::string root = dir / "mimic";
  const std::string meta =
      "dicom_id,subject_id,study_id,ViewPosition\nd1,10000032,50414267,PA\n"
      "d2,10000032,50414267,LATERAL\nd3,10000764,57375967,AP\n";
  const std::string split = "dicom_id,study_id,subject_id,split\nd1,50414267,10000032,train\n"
                            "d2,50414267,10000032,train\nd3,57375967,10000764,validate\n";
  image(root + "/files/p10/p10000032/s50414267/d1.jpg");
  image(root + "/files/p10/p10000764/s57375967/d3.jpg");
  evax::AdapterOptions o;
  o.root = root;
  o.out = dir / "plain.csv";
  write(root + "/mimic-cxr-2.0.0-metadata.csv", meta);
  write(root + "/mimic-cxr-2.0.0-split.csv", split);
  evax::build_mimic_manifest(o);
  fs::remove(root + "/mimic-cxr-2.0.0-metadata.csv");
  fs::remove(root + "/mimic-cxr-2.0.0-split.csv");
  for (const auto& [name, text] : {std::pair<std::string, std::string>{"metadata", meta},
                                   {"split", split}}) {
    gzFile f = gzopen((root + "/mimic-cxr-2.0.0-" + name + ".csv.gz").c_str(), "wb");
    REQUIRE(f);
    REQUIRE(gzwrite(f, text.data(), static_cast<unsigned>(text.size())) ==
            static_cast<int>(text.size()));
    gzclose(f);
  }
  o.out = dir / "gz.csv";
  const auto s = evax::build_mimic_manifest(o);
  CHECK(s.rows == 2);
  CHECK(cells(dir / "gz.csv") == cells(dir / "plain.csv"));
  // Damage is reported with the file's name.
  write(root + "/mimic-cxr-2.0.0-split.csv.gz", "\x1f\x8b\x08 cut short");
  CHECK_THAT(data_error([&] { evax::build_mimic_manifest(o); }),
             Contains("split.csv.gz") && Contains("bad gzip data"));
}

// ---- SIIM ---------------------------------------------------------------------------------------

TEST_CASE("adapters: siim RLE rows merge into one mask per image", "[adapters]") {
  TempDir dir("adapters");
  const std::string root = dir / "siim";
  write(root + "/train-rle.csv",
        "ImageId, EncodedPixels\n"
        "1.2.3.A, 3 2\n"           // column 0, rows 3-4
        "1.2.3.B, -1\n"
        "1.2.3.A, 10 3\n"          // second region of A: column 1, rows 2-4
        "1.2.3.C, 0 1 62 1\n");    // (0,0) and, 62 after the run's end, pixel 63 = (7,7)
  image(root + "/dicom-images-train/s1/r1/1.2.3.A.dcm");
  image(root + "/dicom-images-train/s2/r2/1.2.3.B.dcm");
  image(root + "/dicom-images-train/s3/r3/1.2.3.C.dcm");
  evax::MaskAdapterOptions o;
  o.root = root;
  o.out = dir / "out/siim.csv";
  o.mask_size = 8;
  const std::string masks = dir / "out/masks/";

  SECTION("all images, official order") {
    const auto s = evax::build_siim_manifest(o);
    CHECK(s.rows == 3);
    CHECK(s.masks == 3);
    const Manifest m = manifest_load(o.out);
    CHECK(m.label_names == std::vector<std::string>{"Pneumothorax"});
    REQUIRE(m.size() == 3);
    CHECK(m.rows[0].path == norm(root + "/dicom-images-train/s1/r1/1.2.3.A.dcm"));
    CHECK(m.rows[0].patient_id == "1.2.3.A");
    CHECK(same(m.rows[0].labels, {1}));
    CHECK(same(m.rows[1].labels, {0}));
    CHECK(m.rows[0].mask == norm(masks + "1.2.3.A.png"));
    CHECK(cells(o.out)[1][4] == "masks/1.2.3.A.png");
    CHECK(on_pixels(masks + "1.2.3.A.png") ==
          std::set<std::pair<int, int>>{{3, 0}, {4, 0}, {2, 1}, {3, 1}, {4, 1}});
    CHECK(on_pixels(masks + "1.2.3.B.png").empty());
    CHECK(on_pixels(masks + "1.2.3.C.png") == std::set<std::pair<int, int>>{{0, 0}, {7, 7}});
  }
  SECTION("positives only") {
    o.positives_only = true;
    const auto s = evax::build_siim_manifest(o);
    CHECK(s.rows == 2);
    CHECK(s.skipped == 1);
  }
  SECTION("EVA-X lists") {
    write(dir / "splits/siim/train.txt", "1.2.3.C\n1.2.3.A");
    write(dir / "splits/siim/test.txt", "1.2.3.B");
    o.split_lists = dir / "splits";
    const auto s = evax::build_siim_manifest(o);
    CHECK(s.train == 2);
    CHECK(s.test == 1);
    const Manifest m = manifest_load(o.out);
    CHECK(m.rows[0].patient_id == "1.2.3.C");
    CHECK(m.rows[2].split == "test");
    write(dir / "splits/siim/test.txt", "1.2.3.Z");
    CHECK_THAT(data_error([&] { evax::build_siim_manifest(o); }),
               Contains("siim/test.txt:1") && Contains("'1.2.3.Z'"));
    write(dir / "splits/siim/test.txt", "1.2.3.B\n1.2.3.A");
    CHECK_THAT(data_error([&] { evax::build_siim_manifest(o); }),
               Contains("test.txt:2") && Contains("train.txt:2"));
  }
  SECTION("Kaggle stage 2: standard RLE, chosen by file name or --rle") {
    fs::remove(root + "/train-rle.csv");
    // The same masks as the relative file above, in 1-based absolute starts.
    write(root + "/stage_2_train.csv",
          "ImageId,EncodedPixels\n1.2.3.A,4 2\n1.2.3.B,-1\n1.2.3.A,11 3\n1.2.3.C,1 1 64 1\n");
    const auto s = evax::build_siim_manifest(o);
    CHECK(s.rows == 3);
    CHECK(on_pixels(masks + "1.2.3.A.png") ==
          std::set<std::pair<int, int>>{{3, 0}, {4, 0}, {2, 1}, {3, 1}, {4, 1}});
    CHECK(on_pixels(masks + "1.2.3.C.png") == std::set<std::pair<int, int>>{{0, 0}, {7, 7}});
    // Forced relative on a standard file: 1 + 1 + 64 runs past the 64 pixels, with a hint.
    o.rle = evax::RleFormat::kRelative;
    CHECK_THAT(data_error([&] { evax::build_siim_manifest(o); }),
               Contains("stage_2_train.csv:5") && Contains("standard, absolute RLE?"));
    // Forced standard on a relative file: starts that do not increase.
    fs::remove(root + "/stage_2_train.csv");
    write(root + "/train-rle.csv", "ImageId, EncodedPixels\n1.2.3.A, 10 2 3 1\n");
    o.rle = evax::RleFormat::kStandard;
    CHECK_THAT(data_error([&] { evax::build_siim_manifest(o); }),
               Contains("train-rle.csv:2") && Contains("relative, SIIM stage-1 RLE?"));
    write(root + "/train-rle.csv", "ImageId, EncodedPixels\n1.2.3.A, 0 2\n");
    CHECK_THAT(data_error([&] { evax::build_siim_manifest(o); }), Contains("not 1-based"));
  }
  SECTION("errors") {
    write(root + "/train-rle.csv", "ImageId, EncodedPixels\n1.2.3.A, 3 2\n1.2.3.C, 60 10\n");
    CHECK_THAT(data_error([&] { evax::build_siim_manifest(o); }),
               Contains("train-rle.csv:3") && Contains("past the 64 pixels"));
    write(root + "/train-rle.csv", "ImageId, EncodedPixels\n1.2.3.A, 3 2 1\n");
    CHECK_THAT(data_error([&] { evax::build_siim_manifest(o); }),
               Contains("train-rle.csv:2") && Contains("odd"));
    write(root + "/train-rle.csv", "ImageId, EncodedPixels\n1.2.3.A, 3 2.5\n");
    CHECK_THAT(data_error([&] { evax::build_siim_manifest(o); }),
               Contains("train-rle.csv:2") && Contains("'2.5'"));
    write(root + "/train-rle.csv", "ImageId, EncodedPixels\n1.2.3.A, 3 2\n1.2.3.Q, -1\n");
    CHECK_THAT(data_error([&] { evax::build_siim_manifest(o); }),
               Contains("train-rle.csv:3") && Contains("'1.2.3.Q'"));
    write(root + "/train-rle.csv", "ImageId,Pixels\n");
    CHECK_THAT(data_error([&] { evax::build_siim_manifest(o); }),
               Contains("train-rle.csv:1") && Contains("'EncodedPixels'"));
  }
}

// ---- RSNA ---------------------------------------------------------------------------------------

TEST_CASE("adapters: rsna boxes become one mask and a boxes column", "[adapters]") {
  TempDir dir("adapters");
  const std::string root = dir / "rsna";
  const std::string header = "patientId,x,y,width,height,Target\n";
  write(root + "/stage_2_train_labels.csv",
        header + "p1,1,1,2,3,1\np2,,,,,0\np1,5.0,5.0,2.0,2.0,1\n");
  image(root + "/stage_2_train_images/p1.dcm");
  image(root + "/stage_2_train_images/p2.dcm");
  evax::MaskAdapterOptions o;
  o.root = root;
  o.out = dir / "out/rsna.csv";
  o.mask_size = 8;

  const auto s = evax::build_rsna_manifest(o);
  CHECK(s.rows == 2);
  CHECK(s.masks == 2);
  const Manifest m = manifest_load(o.out);
  REQUIRE(m.size() == 2);
  CHECK(m.rows[0].patient_id == "p1");
  CHECK(same(m.rows[0].labels, {1}));
  CHECK(cells(o.out)[1][5] == "Pneumonia:1,1,2,3;Pneumonia:5,5,2,2");
  REQUIRE(m.rows[0].boxes.size() == 2);
  CHECK(m.rows[0].boxes[1].label == "Pneumonia");
  CHECK(m.rows[0].boxes[1].x == 5);
  CHECK(m.rows[0].boxes[1].h == 2);
  std::set<std::pair<int, int>> want = rect(1, 1, 2, 3);
  for (const auto& p : rect(5, 5, 2, 2)) want.insert(p);
  CHECK(on_pixels(m.rows[0].mask) == want);
  CHECK(same(m.rows[1].labels, {0}));
  CHECK(m.rows[1].boxes.empty());
  CHECK(on_pixels(m.rows[1].mask).empty());

  SECTION("EVA-X lists") {
    write(dir / "splits/rsna/train.txt", "p1");
    write(dir / "splits/rsna/test.txt", "");
    o.split_lists = dir / "splits/rsna";
    const auto s2 = evax::build_rsna_manifest(o);
    CHECK(s2.rows == 1);
    CHECK(s2.skipped == 1);
    write(dir / "splits/rsna/test.txt", "p9");
    CHECK_THAT(data_error([&] { evax::build_rsna_manifest(o); }),
               Contains("rsna/test.txt:1") && Contains("'p9'"));
  }
  SECTION("errors") {
    const auto err = [&](const std::string& rows) {
      write(root + "/stage_2_train_labels.csv", header + rows);
      return data_error([&] { evax::build_rsna_manifest(o); });
    };
    CHECK_THAT(err("p1,1,1,2,3,2\n"), Contains("labels.csv:2") && Contains("'2'"));
    CHECK_THAT(err("p1,1,1,2,3,1\np1,,,,,0\n"),
               Contains("labels.csv:3") && Contains("Target 0 here but 1 on line 2"));
    CHECK_THAT(err("p1,1,one,2,3,1\n"), Contains("labels.csv:2") && Contains("'one'"));
    CHECK_THAT(err("p2,1,,,,0\n"), Contains("labels.csv:2") && Contains("'1'"));
    CHECK_THAT(err("p1,1,1,0,3,1\n"), Contains("labels.csv:2") && Contains("> 0"));
    CHECK_THAT(err("p3,,,,,0\n"), Contains("labels.csv:2") && Contains("'p3'"));
  }
}

// ---- Lung / Shenzhen ----------------------------------------------------------------------------

namespace {
void mask_png(const std::string& path, int side, const cv::Rect& r, int value = 255) {
  fs::create_directories(fs::path(path).parent_path());
  cv::Mat m = cv::Mat::zeros(side, side, CV_8U);
  m(r).setTo(value);
  evax::image_write_png(path, m);
}
}  // namespace

TEST_CASE("adapters: lung and shenzhen image/mask folder layouts", "[adapters]") {
  TempDir dir("adapters");
  const std::string root = dir / "seg";
  evax::SegPairsOptions o;
  o.root = root;
  o.out = dir / "out/seg.csv";
  const std::string masks = dir / "out/masks/";

  SECTION("EVA-X Lung: Train/Images + Train/Masks, Test/...") {
    image(root + "/Train/Images/a.png");
    image(root + "/Train/Images/b.png");
    image(root + "/Test/Images/c.png");
    mask_png(root + "/Train/Masks/a.png", 8, {0, 0, 2, 2}, 1);  // 0/1 masks → 0/255
    mask_png(root + "/Train/Masks/b.png", 8, {2, 2, 1, 1});
    mask_png(root + "/Test/Masks/c.png", 8, {7, 7, 1, 1});
    const auto s = evax::build_lung_manifest(o);
    CHECK(s.train == 2);
    CHECK(s.test == 1);
    CHECK(s.masks == 3);
    const Manifest m = manifest_load(o.out);
    REQUIRE(m.size() == 3);
    CHECK(m.rows[0].path == norm(root + "/Train/Images/a.png"));
    CHECK(m.rows[0].patient_id == "a");
    CHECK(m.rows[0].mask == norm(masks + "a.png"));
    CHECK(on_pixels(masks + "a.png") == rect(0, 0, 2, 2));
    CHECK(m.rows[2].split == "test");
    CHECK(on_pixels(masks + "c.png") == rect(7, 7, 1, 1));
  }
  SECTION("Montgomery: CXR_png + ManualMask/{leftMask,rightMask} merged") {
    image(root + "/CXR_png/MCUCXR_0001_0.png");
    image(root + "/CXR_png/MCUCXR_0002_0.png");  // no mask: left out
    mask_png(root + "/ManualMask/leftMask/MCUCXR_0001_0.png", 8, {0, 0, 3, 8});
    mask_png(root + "/ManualMask/rightMask/MCUCXR_0001_0.png", 8, {5, 0, 3, 8});
    const auto s = evax::build_lung_manifest(o);
    CHECK(s.rows == 1);
    CHECK(s.skipped == 1);
    std::set<std::pair<int, int>> want = rect(0, 0, 3, 8);
    for (const auto& p : rect(5, 0, 3, 8)) want.insert(p);
    CHECK(on_pixels(masks + "MCUCXR_0001_0.png") == want);
  }
  SECTION("Shenzhen: train + train_masks, masks named <image>_<suffix>, merged") {
    image(root + "/train/CHNCXR_0001_0.png");
    image(root + "/train/CHNCXR_0001_0_x.png");  // a longer name wins its own masks
    image(root + "/test/CHNCXR_0002_1.png");
    mask_png(root + "/train_masks/CHNCXR_0001_0_mask.png", 8, {0, 0, 1, 1});
    mask_png(root + "/train_masks/CHNCXR_0001_0_2.png", 8, {1, 1, 1, 1});
    mask_png(root + "/train_masks/CHNCXR_0001_0_x_mask.png", 8, {3, 3, 1, 1});
    mask_png(root + "/test_masks/CHNCXR_0002_1-mask.png", 8, {4, 4, 2, 2});
    mask_png(root + "/test_masks/stray.png", 8, {4, 4, 2, 2});
    const auto s = evax::build_shenzhen_manifest(o);
    CHECK(s.train == 2);
    CHECK(s.test == 1);
    CHECK(on_pixels(masks + "CHNCXR_0001_0.png") ==
          std::set<std::pair<int, int>>{{0, 0}, {1, 1}});
    CHECK(on_pixels(masks + "CHNCXR_0001_0_x.png") == rect(3, 3, 1, 1));
    CHECK(on_pixels(masks + "CHNCXR_0002_1.png") == rect(4, 4, 2, 2));
  }
  SECTION("explicit folders") {
    image(dir / "imgs/q.jpg");
    mask_png(dir / "m1/q.png", 8, {0, 0, 1, 1});
    mask_png(dir / "m2/q.png", 8, {1, 0, 1, 1});
    o.root.clear();
    o.images = dir / "imgs";
    o.masks = {dir / "m1", dir / "m2"};
    o.split = "val";
    CHECK(evax::build_lung_manifest(o).val == 1);
    CHECK(on_pixels(masks + "q.png") == std::set<std::pair<int, int>>{{0, 0}, {0, 1}});
  }
  SECTION("errors") {
    fs::create_directories(root + "/stuff");
    CHECK_THAT(data_error([&] { evax::build_lung_manifest(o); }), Contains("no image/mask"));
    image(root + "/images/a.png");
    mask_png(root + "/masks/left/a.png", 8, {0, 0, 1, 1});
    mask_png(root + "/masks/right/a.png", 6, {0, 0, 1, 1});
    CHECK_THAT(data_error([&] { evax::build_lung_manifest(o); }),
               Contains("6x6") && Contains("8x8"));
    o.out = root + "/x.csv";  // its masks/ folder would be the input mask folder
    CHECK_THROWS_AS(evax::build_lung_manifest(o), evax::ConfigError);
  }
}

// ---- NIH boxes ----------------------------------------------------------------------------------

TEST_CASE("adapters: nih-bbox groups the boxes of an image", "[adapters]") {
  TempDir dir("adapters");
  const std::string root = dir / "nih";
  const std::string header = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n";
  write(root + "/BBox_List_2017.csv",
        header +
            "00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,"
            "79.1864406779661,,,\n"
            "00014716_007.png,Infiltrate,1.5,2,3,4,,,\n"
            "00013118_008.png,Cardiomegaly,10,20,30,40,,,\n");
  write(root + "/Data_Entry_2017_v2020.csv",
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
        "View Position,OriginalImageWidth,OriginalImageHeight,OriginalImagePixelSpacing_x,"
        "OriginalImagePixelSpacing_y\n"
        "00013118_008.png,Atelectasis|Cardiomegaly,8,13118,45,M,AP,2500,2048,0.168,0.168\n");
  image(root + "/images/00013118_008.png");
  image(root + "/images/00014716_007.png");
  evax::AdapterOptions o;
  o.root = root;
  o.out = dir / "out/boxes.csv";
  const auto s = evax::build_nih_bbox_manifest(o);
  CHECK(s.rows == 2);
  CHECK(s.test == 2);
  const auto c = cells(o.out);
  CHECK(c[0] == std::vector<std::string>{"path", "split", "patient_id", "view", "boxes"});
  CHECK(c[1][4] ==
        "Atelectasis:225.0847458,547.0192168,86.77966102,79.18644068;Cardiomegaly:10,20,30,40");
  CHECK(c[2][4] == "Infiltration:1.5,2,3,4");
  const Manifest m = manifest_load(o.out);
  REQUIRE(m.size() == 2);
  CHECK(m.rows[0].patient_id == "00013118");
  CHECK(m.rows[0].view == "AP");
  CHECK(m.rows[1].patient_id == "00014716");
  CHECK(m.rows[1].view == "");
  REQUIRE(m.rows[0].boxes.size() == 2);
  CHECK(m.rows[0].boxes[0].x == Approx(225.0847458));

  write(root + "/BBox_List_2017.csv", header + "00014716_007.png,Flu,1,2,3,4,,,\n");
  CHECK_THAT(data_error([&] { evax::build_nih_bbox_manifest(o); }),
             Contains("BBox_List_2017.csv:2") && Contains("'Flu'"));
  write(root + "/BBox_List_2017.csv", header + "00014716_007.png,Mass,1,2,x,4,,,\n");
  CHECK_THAT(data_error([&] { evax::build_nih_bbox_manifest(o); }),
             Contains("BBox_List_2017.csv:2") && Contains("'w'") && Contains("'x'"));
  write(root + "/BBox_List_2017.csv", header + "00099999_000.png,Mass,1,2,3,4,,,\n");
  CHECK_THAT(data_error([&] { evax::build_nih_bbox_manifest(o); }),
             Contains("BBox_List_2017.csv:2") && Contains("00099999_000.png"));
}

// ---- Merge --------------------------------------------------------------------------------------

TEST_CASE("adapters: merge drops test images, their patients and laterals", "[adapters]") {
  TempDir dir("adapters");
  const std::string a = write(dir / "a/cxr.csv",
                              "path,split,patient_id,view,Effusion\n"
                              "img/1.png,train,P1,PA,1\n"     // patient P1 has a test image
                              "img/2.png,test,P1,PA,0\n"      // test
                              "img/3.png,train,P2,LATERAL,\n"  // lateral
                              "img/4.png,train,P3,AP,1\n"     // kept
                              "img/5.png,val,P4,,0\n");       // kept (unknown view)
  const std::string b = write(dir / "b/chexpert.csv",
                              "path,split,patient_id,view,mask\n"
                              "../a/img/2.png,train,Q1,PA,\n"  // a test image of input a
                              "x/1.png,train,P1,PA,\n"         // kept: P1 of another source
                              "x/2.png,test,Q9,AP,\n"          // test
                              "../a/img/4.png,train,Q3,AP,\n"  // duplicate
                              "x/3.png,train,Q9,PA,\n"         // patient Q9 has a test image
                              "x/4.png,train,Q4,Lateral,\n");  // lateral
  const std::string out = dir / "merged.csv";
  const auto s = evax::merge_pretrain_manifests({a, b}, out);
  REQUIRE(s.sources.size() == 2);
  const auto& ca = s.sources[0];
  CHECK(ca.source == "cxr");
  CHECK(ca.rows == 5);
  CHECK(ca.kept == 2);
  CHECK(ca.dropped_test == 2);
  CHECK(ca.dropped_lateral == 1);
  CHECK(ca.dropped_duplicate == 0);
  const auto& cb = s.sources[1];
  CHECK(cb.source == "chexpert");
  CHECK(cb.rows == 6);
  CHECK(cb.kept == 1);
  CHECK(cb.dropped_test == 3);
  CHECK(cb.dropped_lateral == 1);
  CHECK(cb.dropped_duplicate == 1);
  CHECK(s.kept == 3);
  const auto c = cells(out);
  REQUIRE(c.size() == 4);
  CHECK(c[0] == std::vector<std::string>{"path", "split", "patient_id", "view"});
  CHECK(c[1] == std::vector<std::string>{"a/img/4.png", "train", "cxr/P3", "AP"});
  CHECK(c[2] == std::vector<std::string>{"a/img/5.png", "val", "cxr/P4", ""});
  CHECK(c[3] == std::vector<std::string>{"b/x/1.png", "train", "chexpert/P1", "PA"});
  CHECK(manifest_load(out).size() == 3);

  // Inputs with the same file stem get distinct sources.
  const std::string b2 = write(dir / "c/cxr.csv", "path,split,patient_id\nz.png,train,P1\n");
  const auto s2 = evax::merge_pretrain_manifests({a, b2}, out);
  CHECK(s2.sources[1].source == "cxr_2");
  CHECK(cells(out).back()[2] == "cxr_2/P1");

  CHECK_THAT(data_error([&] { evax::merge_pretrain_manifests({a, dir / "none.csv"}, out); }),
             Contains("none.csv"));
  CHECK_THROWS_AS(evax::merge_pretrain_manifests({}, out), evax::ConfigError);
}

// ---- The published EVA-X split lists ------------------------------------------------------------

TEST_CASE("adapters: EVA-X split lists parse with the documented counts", "[adapters]") {
  // ../shared/data/evax_splits next to the repository, or $EVAX_SPLITS_DIR.
  const char* env = std::getenv("EVAX_SPLITS_DIR");
  const std::string d = env && *env ? env : EVAX_SPLITS_DIR;
  if (!fs::is_directory(d))
    EVAX_SKIP("no EVA-X split lists at " << d << " (set EVAX_SPLITS_DIR)");
  const auto train = evax::read_cxr14_split_list(d + "/cxr14/train_official.txt");
  CHECK(train.size() == 75312);
  CHECK(evax::read_cxr14_split_list(d + "/cxr14/val_official.txt").size() == 11212);
  CHECK(evax::read_cxr14_split_list(d + "/cxr14/test_official.txt").size() == 25596);
  CHECK(train[1].image == "00000001_001.png");
  CHECK(same(train[1].labels, cxr14({1, 10})));  // Cardiomegaly | Emphysema
  int64_t no_finding = 0;
  for (const auto& e : train) no_finding += same(e.labels, cxr14({})) ? 1 : 0;
  CHECK(no_finding == 43886);

  const auto ctrain = evax::read_covidx_list(d + "/covidx3/train_COVIDx9A.txt");
  const auto ctest = evax::read_covidx_list(d + "/covidx3/test_COVIDx9A.txt");
  CHECK(ctrain.size() == 30130);
  CHECK(ctest.size() == 400);
  std::set<std::string> labels;
  for (const auto& e : ctrain) labels.insert(e.label);
  CHECK(labels == std::set<std::string>{"COVID-19", "normal", "pneumonia"});
  CHECK(ctest[0].filename == "MIDRC-RICORD-1C-419639-003251-46647-0.png");

  CHECK(evax::read_id_list(d + "/siim/train.txt").size() == 1868);
  CHECK(evax::read_id_list(d + "/siim/test.txt").size() == 801);
  CHECK(evax::read_id_list(d + "/rsna/train.txt").size() == 4236);
  CHECK(evax::read_id_list(d + "/rsna/test.txt").size() == 1776);
}
