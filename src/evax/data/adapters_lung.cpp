// Image-folder + mask-folder segmentation datasets: lung fields (EVA-X "Lung", Montgomery) and
// Shenzhen.
#include <algorithm>
#include <opencv2/imgproc.hpp>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/data/adapters_internal.h"
#include "evax/io/image.h"

namespace evax {

using namespace adapters_detail;

namespace {

const std::set<std::string> kImageExts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff",
                                          ".dcm", ".dicom"};

// Sorted regular files with an image extension directly in `dir`.
std::vector<fs::path> image_files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (it->is_regular_file(ec2) && kImageExts.count(lower(it->path().extension().string())))
      out.push_back(it->path());
  }
  if (ec) raise<DataError>("cannot list '", dir.string(), "': ", ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

struct SegSet {
  std::string split;
  fs::path images;
  std::vector<fs::path> masks;
};

// The first child folder of `dir` whose lower-case name is one of `names` (names in order).
fs::path child_dir(const fs::path& dir, const std::vector<std::string>& names) {
  std::vector<fs::path> kids;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (it->is_directory(ec2)) kids.push_back(it->path());
  }
  std::sort(kids.begin(), kids.end());
  for (const std::string& n : names)
    for (const fs::path& k : kids)
      if (lower(k.filename().string()) == n) return k;
  return {};
}

// Mask folders in `dir`: itself when it holds images, else its subfolders that do
// (Montgomery's ManualMask/{leftMask,rightMask}).
std::vector<fs::path> mask_dirs_in(const fs::path& dir) {
  if (!image_files_in(dir).empty()) return {dir};
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (it->is_directory(ec2) && !image_files_in(it->path()).empty()) out.push_back(it->path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<SegSet> detect_seg_layout(const fs::path& root) {
  const std::vector<std::string> img_names = {"images", "image", "imgs", "img", "cxr_png"};
  const std::vector<std::string> mask_names = {"masks", "mask", "labels", "annotations", "ann",
                                               "manualmask"};
  const std::vector<std::pair<std::string, std::vector<std::string>>> splits = {
      {"train", {"train", "training"}},
      {"val", {"val", "valid", "validation"}},
      {"test", {"test", "testing"}}};
  std::vector<SegSet> sets;
  for (const auto& [split, aliases] : splits) {
    const fs::path d = child_dir(root, aliases);
    if (d.empty()) continue;
    const fs::path img = child_dir(d, img_names), msk = child_dir(d, mask_names);
    if (!img.empty() && !msk.empty()) {
      sets.push_back({split, img, mask_dirs_in(msk)});
      continue;
    }
    const std::string base = lower(d.filename().string());
    const fs::path dm = child_dir(root, {base + "_masks", base + "_mask"});
    if (!dm.empty()) sets.push_back({split, d, mask_dirs_in(dm)});
  }
  if (sets.empty()) {
    const fs::path img = child_dir(root, img_names), msk = child_dir(root, mask_names);
    if (!img.empty() && !msk.empty()) sets.push_back({"train", img, mask_dirs_in(msk)});
  }
  if (sets.empty())
    raise<DataError>("no image/mask folders found in '", root.string(),
                     "': expected <split>/{Images,Masks} (split train, val or test), <split> + "
                     "<split>_masks, or {images,CXR_png} + {masks,mask,ManualMask/*}; or pass "
                     "--images and --masks");
  for (const SegSet& s : sets)
    if (s.masks.empty())
      raise<DataError>("no mask images in the mask folder paired with '", s.images.string(), "'");
  return sets;
}

// Reads a mask as single-channel foreground (> 0) = 255.
cv::Mat read_binary_mask(const fs::path& p) {
  cv::Mat m = image_decode(read_file(p.string()), p.string());  // DataError naming the file
  if (m.channels() == 4) cv::cvtColor(m, m, cv::COLOR_BGRA2BGR);  // alpha is not foreground
  if (m.channels() == 3) {
    std::vector<cv::Mat> ch;
    cv::split(m, ch);
    m = cv::max(cv::max(ch[0], ch[1]), ch[2]);
  }
  cv::Mat out;
  cv::compare(m, 0, out, cv::CMP_GT);
  return out;
}

ManifestSummary build_seg_pairs(const SegPairsOptions& o, const char* dataset) {
  std::vector<SegSet> sets;
  if (!o.images.empty()) {
    if (o.masks.empty()) raise<ConfigError>(dataset, ": --images needs at least one --masks");
    SegSet s{o.split, fs::path(o.images), {}};
    for (const auto& m : o.masks) s.masks.emplace_back(m);
    sets.push_back(std::move(s));
  } else {
    sets = detect_seg_layout(require_root(o.root, dataset));
  }
  const fs::path out_masks = masks_dir_of(o.out);
  // The merged masks must not land in (or above) an input folder.
  const auto inside_out_masks = [&](const fs::path& d) {
    const fs::path rel = fs::path(normal_abs(d)).lexically_relative(out_masks);
    return !rel.empty() && *rel.begin() != "..";
  };
  for (const SegSet& s : sets) {
    check_split(s.split, dataset);
    bool clash = inside_out_masks(s.images);
    for (const fs::path& d : s.masks) clash = clash || inside_out_masks(d);
    if (clash)
      raise<ConfigError>(dataset, ": the output mask folder '", out_masks.string(),
                         "' holds input images or masks; write the manifest to another folder");
  }

  struct Item {
    fs::path image;
    std::string split;
    std::vector<fs::path> masks;
  };
  std::vector<Item> items;
  std::unordered_map<std::string, std::string> stem_seen;  // across sets: mask names must differ
  int64_t orphans = 0;
  std::string orphan_example;
  for (const SegSet& s : sets) {
    std::unordered_map<std::string, size_t> by_stem;
    const size_t first = items.size();
    for (const fs::path& img : image_files_in(s.images)) {
      const std::string stem = img.stem().string();
      const auto [it, fresh] = stem_seen.emplace(stem, img.string());
      if (!fresh)
        raise<DataError>(dataset, ": images '", it->second, "' and '", img.string(),
                         "' have the same name; their masks would collide");
      by_stem[stem] = items.size();
      items.push_back({img, s.split, {}});
    }
    if (items.size() == first)
      raise<DataError>(dataset, ": no images in '", s.images.string(), "'");
    for (const fs::path& dir : s.masks)
      for (const fs::path& m : image_files_in(dir)) {
        // The owner: the image whose stem is the mask's stem or its longest prefix before '_'/'-'.
        const std::string ms = m.stem().string();
        int64_t owner = -1;
        for (size_t len = ms.size(); len > 0 && owner < 0; --len) {
          if (len < ms.size() && ms[len] != '_' && ms[len] != '-') continue;
          const auto it = by_stem.find(ms.substr(0, len));
          if (it != by_stem.end()) owner = static_cast<int64_t>(it->second);
        }
        if (owner < 0) {
          if (orphans++ == 0) orphan_example = m.string();
          continue;
        }
        items[static_cast<size_t>(owner)].masks.push_back(m);
      }
  }
  if (orphans > 0)
    log_warn(dataset, ": ", orphans, " masks match no image (e.g. '", orphan_example, "')");

  std::vector<size_t> keep;
  for (size_t i = 0; i < items.size(); ++i)
    if (!items[i].masks.empty()) keep.push_back(i);
  const int64_t skipped = static_cast<int64_t>(items.size() - keep.size());
  if (skipped > 0) log_warn(dataset, ": ", skipped, " images have no mask and are left out");
  make_dirs(out_masks);
  parallel_for_n(static_cast<int64_t>(keep.size()), [&](int64_t k) {
    const Item& it = items[keep[static_cast<size_t>(k)]];
    cv::Mat merged;
    for (const fs::path& m : it.masks) {
      const cv::Mat b = read_binary_mask(m);
      if (merged.empty()) {
        merged = b;
      } else if (b.size() != merged.size()) {
        raise<DataError>(dataset, ": mask '", m.string(), "' is ", b.cols, "x", b.rows,
                         " but '", it.masks[0].string(), "' of the same image is ", merged.cols,
                         "x", merged.rows);
      } else {
        merged |= b;
      }
    }
    write_mask_png(out_masks / (it.image.stem().string() + ".png"), merged);
  });
  ManifestWriter w(o.out, {}, false, true, false);
  for (size_t i : keep) {
    const Item& it = items[i];
    w.add({it.image.string(), it.split, it.image.stem().string(), "", {},
           (out_masks / (it.image.stem().string() + ".png")).string(), ""});
  }
  return w.write(skipped, static_cast<int64_t>(keep.size()));
}

}  // namespace

ManifestSummary build_lung_manifest(const SegPairsOptions& options) {
  return build_seg_pairs(options, "lung");
}

ManifestSummary build_shenzhen_manifest(const SegPairsOptions& options) {
  return build_seg_pairs(options, "shenzhen");
}

}  // namespace evax
