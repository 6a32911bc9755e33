#include "evax/data/manifest.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "evax/core/error.h"
#include "evax/data/synth.h"
#include "test_util.h"

using Catch::Matchers::Contains;
using evax::DataError;
using evax::Manifest;
using evax::manifest_load;

namespace {

std::string write(const evax::test::TempDir& dir, const std::string& name,
                  const std::string& text) {
  const std::string path = dir / name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// The DataError message of loading `text`, or "" when it loads.
std::string load_error(const std::string& text, evax::ManifestOptions opts = {}) {
  evax::test::TempDir dir("manifest");
  const std::string path = write(dir, "m.csv", text);
  try {
    manifest_load(path, opts);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

const std::string kHeader = "path,split,patient_id,view,Effusion,Nodule,boxes\n";

}  // namespace

TEST_CASE("manifest: parses rows, labels, boxes and resolves paths", "[manifest]") {
  evax::test::TempDir dir("manifest");
  const std::string text =
      "\xEF\xBB\xBFpath,split,patient_id,view,Effusion,\"Nodule, small\",mask,boxes\r\n"
      "png/a.png,train,P1,PA,1,0,masks/a.png,\"Nodule:1,2,3,4;Mass:5.5,6,7,8.25;\"\r\n"
      "\r\n"
      "/abs/b.png,val,P2,,0.0,,,\r\n"
      "\"c,\"\"d\"\".png\",test,P3,\"AP\nportable\",,1.0,,\r\n"
      "../e.png,train,P1,LATERAL,,,,\n";
  const std::string path = write(dir, "sub.csv", text);
  const Manifest m = manifest_load(path);
  CHECK(m.file == path);
  REQUIRE(m.label_names == std::vector<std::string>{"Effusion", "Nodule, small"});
  REQUIRE(m.size() == 4);

  const auto& a = m.rows[0];
  CHECK(a.path == (std::filesystem::path(dir.str()) / "png/a.png").string());
  CHECK(a.split == "train");
  CHECK(a.patient_id == "P1");
  CHECK(a.view == "PA");
  CHECK(a.labels == std::vector<float>{1.0f, 0.0f});
  CHECK(a.mask == (std::filesystem::path(dir.str()) / "masks/a.png").string());
  REQUIRE(a.boxes.size() == 2);
  CHECK(a.boxes[0].label == "Nodule");
  CHECK(a.boxes[0].x == 1.0f);
  CHECK(a.boxes[0].h == 4.0f);
  CHECK(a.boxes[1].label == "Mass");
  CHECK(a.boxes[1].x == 5.5f);
  CHECK(a.boxes[1].h == 8.25f);
  CHECK(a.line == 2);

  const auto& b = m.rows[1];
  CHECK(b.path == "/abs/b.png");
  CHECK(b.view.empty());
  CHECK(b.labels[0] == 0.0f);
  CHECK(std::isnan(b.labels[1]));  // missing stays missing, never 0
  CHECK(b.mask.empty());
  CHECK(b.boxes.empty());
  CHECK(b.line == 4);

  const auto& c = m.rows[2];
  CHECK(c.path == (std::filesystem::path(dir.str()) / "c,\"d\".png").string());
  CHECK(c.view == "AP\nportable");
  CHECK(std::isnan(c.labels[0]));
  CHECK(c.labels[1] == 1.0f);
  CHECK(c.line == 5);

  CHECK(m.rows[3].path == (std::filesystem::path(dir.str()).parent_path() / "e.png").string());
  CHECK(m.rows[3].line == 7);  // the quoted newline of row 3 counts

  SECTION("select_split / select_labels / label_index") {
    const Manifest train = m.select_split("train");
    REQUIRE(train.size() == 2);
    CHECK(train.label_names == m.label_names);
    CHECK(m.select_split("test").rows[0].patient_id == "P3");
    CHECK_THROWS_AS(m.select_split("valid"), evax::ConfigError);
    CHECK(m.label_index("Nodule, small") == 1);
    CHECK_THROWS_WITH(m.label_index("Edema"), Contains("no label column 'Edema'"));
    const Manifest sel = m.select_labels({"Nodule, small"});
    CHECK(sel.label_names == std::vector<std::string>{"Nodule, small"});
    CHECK(sel.rows[0].labels == std::vector<float>{0.0f});
  }
}

TEST_CASE("manifest: uncertain labels", "[manifest]") {
  const std::string text = kHeader + "a.png,train,P1,PA,-1,-1.0,\n";
  CHECK_THAT(load_error(text), Contains("m.csv:2: column 5 'Effusion': uncertain label '-1'"));
  evax::test::TempDir dir("manifest");
  evax::ManifestOptions o;
  o.allow_uncertain = true;
  const Manifest m = manifest_load(write(dir, "m.csv", text), o);
  CHECK(m.rows[0].labels == std::vector<float>{-1.0f, -1.0f});
}

TEST_CASE("manifest: every error names file, line and column", "[manifest]") {
  SECTION("missing required columns") {
    CHECK_THAT(load_error("path,patient_id\na,P\n"),
               Contains("m.csv:1: missing required column 'split' (columns: path, patient_id)"));
    CHECK_THAT(load_error("split,patient_id\ntrain,P\n"),
               Contains("missing required column 'path'"));
    CHECK_THAT(load_error("path,split\na,train\n"),
               Contains("missing required column 'patient_id'"));
  }
  SECTION("duplicate and empty column names") {
    CHECK_THAT(load_error("path,split,patient_id,Nodule,Nodule\n"),
               Contains("m.csv:1: column 5 'Nodule': duplicate column (also column 4)"));
    CHECK_THAT(load_error("path,split,patient_id,,x\n"),
               Contains("m.csv:1: column 4 has an empty name"));
  }
  SECTION("bad label values") {
    for (const char* v : {"2", "yes", "0.5", "1.5", "nan", "+1", "True"}) {
      CAPTURE(v);
      CHECK_THAT(load_error(kHeader + "a.png,train,P1,PA,0," + v + ",\n"),
                 Contains("m.csv:2: column 6 'Nodule': bad label value '" + std::string(v) +
                          "' (want 1, 0 or empty)"));
    }
    CHECK(load_error(kHeader + "a.png,train,P1,PA, 1 ,0.0,\n").empty());  // spaces trimmed
  }
  SECTION("malformed boxes") {
    for (const char* box : {"Nodule:1,2,3", "Nodule 1,2,3,4", ":1,2,3,4", "N:1,2,x,4",
                            "N:1,2,0,4", "N:1,2,3,-4", "N:1,2,3,4,5", "N:1,2,3,inf"}) {
      CAPTURE(box);
      CHECK_THAT(load_error(kHeader + "a.png,train,P1,PA,0,0,\"ok:1,1,1,1;" + box + "\"\n"),
                 Contains("m.csv:2: column 7 'boxes': malformed box '" + std::string(box) + "'"));
    }
  }
  SECTION("unknown split") {
    CHECK_THAT(load_error(kHeader + "a.png,train,P1,PA,0,0,\nb.png,training,P2,PA,0,0,\n"),
               Contains("m.csv:3: column 2 'split': unknown split 'training'"));
  }
  SECTION("empty path or patient") {
    CHECK_THAT(load_error(kHeader + ",train,P1,PA,0,0,\n"),
               Contains("m.csv:2: column 1 'path': empty path"));
    CHECK_THAT(load_error(kHeader + "a.png,train, ,PA,0,0,\n"),
               Contains("m.csv:2: column 3 'patient_id': empty patient_id"));
  }
  SECTION("field count, quotes") {
    CHECK_THAT(load_error(kHeader + "a.png,train,P1,PA,0,0\n"),
               Contains("m.csv:2: 6 fields but the header has 7"));
    CHECK_THAT(load_error(kHeader + "a.png,train,P1,PA,0,0,\n\"b.png,train\n"),
               Contains("m.csv:3: unterminated quoted field"));
    CHECK_THAT(load_error(kHeader + "\"a\"x.png,train,P1,PA,0,0,\n"),
               Contains("m.csv:2: text after a closing quote"));
  }
  SECTION("patient in two splits") {
    const std::string text = kHeader + "a.png,train,P1,PA,0,0,\nb.png,test,P1,PA,0,0,\n";
    CHECK_THAT(load_error(text), Contains("m.csv:3: column 3 'patient_id': patient 'P1' is in "
                                          "split 'test' here but in 'train' on line 2"));
    evax::ManifestOptions o;
    o.check_patient_splits = false;
    CHECK(load_error(text, o).empty());
  }
  SECTION("empty or missing file") {
    CHECK_THAT(load_error(""), Contains("m.csv: empty file"));
    CHECK_THROWS_AS(manifest_load("/nonexistent/m.csv"), DataError);
  }
}

TEST_CASE("manifest: reads what evax synth writes", "[manifest]") {
  evax::test::TempDir dir("manifest-synth");
  evax::SynthOptions so;
  so.out_dir = dir.str();
  so.n = 12;
  so.size = 64;
  so.seed = 3;
  so.write_dicom = false;
  so.threads = 1;
  evax::synth_generate(so);
  const Manifest cls = manifest_load(dir / "classification.csv");
  CHECK(cls.size() == 12);
  CHECK(cls.label_names.size() == 6);  // 5 findings + No Finding
  CHECK(std::filesystem::exists(cls.rows[0].path));
  const Manifest seg = manifest_load(dir / "segmentation_lungs.csv");
  CHECK(std::filesystem::exists(seg.rows[0].mask));
  CHECK(seg.label_names.empty());
  int boxes = 0;
  for (const auto& r : cls.rows) boxes += static_cast<int>(r.boxes.size());
  CHECK(boxes == static_cast<int>(std::count_if(cls.rows.begin(), cls.rows.end(), [&](auto& r) {
          return r.labels[static_cast<size_t>(cls.label_index("Nodule"))] == 1.0f;
        })));
}
