#include "evax/data/image_folder.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "skip.h"
#include "test_util.h"

namespace fs = std::filesystem;
using evax::test::TempDir;

namespace {

void touch(const TempDir& d, const std::string& rel) {
  const fs::path p = d / rel;
  fs::create_directories(p.parent_path());
  std::ofstream(p) << "x";
}

// A tree with everything the rules cover: case and byte order of classes, nested folders whose
// names sort around '/', hidden files/folders, non-images, upper-case extensions, an empty class.
void make_tree(const TempDir& d) {
  for (const char* f : {"b_cls/img2.PNG", "b_cls/img10.png", "b_cls/.hidden.png", "b_cls/notes.txt",
                        "b_cls/sub/x.jpg", "b_cls/sub-a/y.jpeg", "b_cls/sub/deeper/w.dcm",
                        "b_cls/.git/z.png", "A_cls/a.dcm", "A_cls/c.JPG", "A_cls/b.jpeg.bak",
                        ".hiddenclass/q.png", "a_lower/k.png", "README.md"})
    touch(d, f);
  fs::create_directories(d / "empty");
}

}  // namespace

TEST_CASE("image folder: classes and samples equal torchvision ImageFolder", "[image_folder][python]") {
  if (std::string(EVAX_PYTHON).empty()) EVAX_SKIP("EVAX_PYTHON not configured: no torchvision");
  TempDir d("image_folder");
  make_tree(d);
  const evax::Manifest m = evax::image_folder_manifest(d.str());
  const std::string out = d / "reference.txt";
  const std::string cmd = "\"" + std::string(EVAX_PYTHON) + "\" \"" +
                          evax::test::source_path("tools/image_folder_reference.py") + "\" \"" +
                          d.str() + "\" \"" + out + "\"";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::vector<std::string> ref_classes;
  std::vector<std::pair<std::string, int64_t>> ref_samples;
  std::ifstream in(out);
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    std::string kind, name;
    int64_t idx = -1;
    std::getline(ls, kind, '\t');
    std::getline(ls, name, '\t');
    ls >> idx;
    if (kind == "class") {
      REQUIRE(idx == static_cast<int64_t>(ref_classes.size()));
      ref_classes.push_back(name);
    } else {
      ref_samples.emplace_back(name, idx);
    }
  }
  CHECK(m.label_names == ref_classes);
  CHECK(m.label_names == std::vector<std::string>{"A_cls", "a_lower", "b_cls", "empty"});
  REQUIRE(m.size() == static_cast<int64_t>(ref_samples.size()));
  REQUIRE(m.size() == 8);
  for (int64_t i = 0; i < m.size(); ++i) {
    const evax::ManifestRow& r = m.rows[static_cast<size_t>(i)];
    CAPTURE(i, r.path);
    CHECK(fs::path(r.path).is_absolute());
    CHECK(fs::path(r.path).lexically_relative(d.str()).string() == ref_samples[i].first);
    CHECK(r.patient_id == ref_samples[i].first);
    CHECK(r.split == "train");
    std::vector<float> one_hot(m.label_names.size(), 0.0f);
    one_hot[static_cast<size_t>(ref_samples[i].second)] = 1.0f;
    CHECK(r.labels == one_hot);
  }
  CHECK(m.rows.back().patient_id == "b_cls/sub/deeper/w.dcm");
  CHECK(evax::image_folder_manifest(d.str(), evax::ImageFolderOptions().split("test"))
            .select_split("test")
            .size() == 8);
}

TEST_CASE("image folder: no classes or no images is a DataError naming root", "[image_folder]") {
  TempDir d("image_folder_bad");
  auto message = [](const std::string& root) {
    try {
      evax::image_folder_manifest(root);
    } catch (const evax::DataError& e) {
      return std::string(e.what());
    }
    return std::string("no DataError");
  };
  CHECK_THAT(message(d / "missing"), Catch::Contains(d / "missing"));
  touch(d, "flat/a.png");  // images but no class folders
  CHECK_THAT(message(d / "flat"), Catch::Contains(d / "flat") && Catch::Contains("no class"));
  touch(d, "noimg/cls/a.txt");
  touch(d, "noimg/cls/.b.png");
  fs::create_directories(d / "noimg/other");
  CHECK_THAT(message(d / "noimg"), Catch::Contains(d / "noimg") && Catch::Contains("no images"));
  CHECK_THROWS_AS(evax::image_folder_manifest(d.str(), evax::ImageFolderOptions().split("dev")),
                  evax::ConfigError);
}
