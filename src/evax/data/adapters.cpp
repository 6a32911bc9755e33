#include "evax/data/adapters.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <limits>
#include <mutex>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/core/strings.h"
#include "evax/data/manifest.h"
#include "evax/io/gzip.h"

namespace evax {

const std::vector<std::string> kCxr14Labels = {
    "Atelectasis", "Cardiomegaly", "Effusion",      "Infiltration", "Mass",
    "Nodule",      "Pneumonia",    "Pneumothorax",  "Consolidation", "Edema",
    "Emphysema",   "Fibrosis",     "Pleural_Thickening", "Hernia"};

const std::vector<std::string> kChexpertLabels = {
    "No Finding",   "Enlarged Cardiomediastinum", "Cardiomegaly",     "Lung Opacity",
    "Lung Lesion",  "Edema",                      "Consolidation",    "Pneumonia",
    "Atelectasis",  "Pneumothorax",               "Pleural Effusion", "Pleural Other",
    "Fracture",     "Support Devices"};

const std::vector<std::string> kChexpertCompetitionLabels = {
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"};

namespace {

namespace fs = std::filesystem;

constexpr float kMissing = std::numeric_limits<float>::quiet_NaN();

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// Splits on runs of blanks (the list files use single spaces; runs are tolerated).
std::vector<std::string> split_blanks(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  for (std::string tok; is >> tok;) out.push_back(tok);
  return out;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isdigit(static_cast<unsigned char>(c)) != 0;
         });
}

// Shortest faithful text of a box coordinate (NIH boxes carry 12 decimals; 10 digits keep them
// exact to well below a pixel).
std::string fmt_num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

bool parse_double(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

std::string at(const std::string& file, int64_t line) { return str_cat(file, ":", line, ": "); }

void check_split(const std::string& split, const char* what) {
  if (split != "train" && split != "val" && split != "test")
    raise<ConfigError>(what, ": unknown split '", split, "' (want train, val or test)");
}

// ---- Files and folders --------------------------------------------------------------------------

fs::path require_root(const std::string& root, const char* dataset) {
  if (root.empty()) raise<ConfigError>(dataset, ": no dataset root given");
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    raise<DataError>(dataset, ": dataset root '", root, "' is not a folder");
  return fs::path(root);
}

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

std::string normal_abs(const fs::path& p) { return fs::absolute(p).lexically_normal().string(); }

// Folder where an adapter writes masks for the manifest `out`.
fs::path masks_dir_of(const std::string& out) {
  return fs::absolute(fs::path(out)).lexically_normal().parent_path() / "masks";
}

// The first file named one of `names` in root or up to `depth` folders below it, shallowest
// first, folders in name order; "" when none.
std::string find_file(const fs::path& root, const std::vector<std::string>& names, int depth) {
  std::vector<fs::path> level = {root};
  for (int d = 0; d <= depth && !level.empty(); ++d) {
    for (const fs::path& dir : level)
      for (const std::string& n : names)
        for (const std::string& name : {n, n + ".gz"}) {  // any input may come gzipped
          std::error_code ec;
          if (fs::is_regular_file(dir / name, ec)) return (dir / name).string();
        }
    if (d == depth) break;
    std::vector<fs::path> next;
    for (const fs::path& dir : level) {
      std::error_code ec;
      for (fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
           !ec && it != end; it.increment(ec)) {
        std::error_code ec2;
        if (it->is_directory(ec2)) next.push_back(it->path());
      }
    }
    std::sort(next.begin(), next.end());
    level = std::move(next);
  }
  return "";
}

std::string require_file(const fs::path& root, const std::vector<std::string>& names, int depth,
                         const char* dataset) {
  const std::string f = find_file(root, names, depth);
  if (f.empty())
    raise<DataError>(dataset, ": no ", join(names, " or "), " in '", root.string(), "'",
                     depth > 0 ? " or the folders below it" : "");
  return f;
}

// The folder holding a dataset's EVA-X lists: `dir/sub` when it has `probe`, else `dir`.
fs::path lists_dir(const std::string& dir, const char* sub, const std::string& probe) {
  std::error_code ec;
  const fs::path d(dir);
  if (fs::is_regular_file(d / sub / probe, ec)) return d / sub;
  if (fs::is_regular_file(d / probe, ec)) return d;
  raise<DataError>("split lists: no ", probe, " in '", dir, "' or '", (d / sub).string(), "'");
}

const std::set<std::string> kImageExts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff",
                                          ".dcm", ".dicom"};

// Image files under a root, by file name or stem.
struct FileIndex {
  std::unordered_map<std::string, std::string> by_key;
  const std::string* find(const std::string& key) const {
    const auto it = by_key.find(key);
    return it == by_key.end() ? nullptr : &it->second;
  }
};

// Scans `root` once (following folder links) for files whose lower-case extension is in `exts`
// (earlier = preferred when two files share a key), skipping the folder `skip`.
FileIndex index_files(const fs::path& root, const std::vector<std::string>& exts, bool key_is_stem,
                      const fs::path& skip, const char* dataset) {
  FileIndex idx;
  std::unordered_map<std::string, size_t> rank_of;  // key -> rank of the kept file
  int64_t duplicates = 0;
  std::string example;
  const std::string skip_s = skip.empty() ? "" : normal_abs(skip);
  std::error_code ec;
  fs::recursive_directory_iterator it(root,
                                      fs::directory_options::follow_directory_symlink |
                                          fs::directory_options::skip_permission_denied,
                                      ec);
  if (ec) raise<DataError>(dataset, ": cannot list '", root.string(), "': ", ec.message());
  for (const fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) raise<DataError>(dataset, ": cannot list '", root.string(), "': ", ec.message());
    std::error_code ec2;
    if (it->is_directory(ec2)) {
      if (!skip_s.empty() && normal_abs(it->path()) == skip_s) it.disable_recursion_pending();
      continue;
    }
    const fs::path& p = it->path();
    const std::string ext = lower(p.extension().string());
    const auto e = std::find(exts.begin(), exts.end(), ext);
    if (e == exts.end()) continue;
    const size_t rank = static_cast<size_t>(e - exts.begin());
    const std::string key = key_is_stem ? p.stem().string() : p.filename().string();
    const auto [slot, fresh] = idx.by_key.emplace(key, p.string());
    if (fresh) {
      rank_of[key] = rank;
      continue;
    }
    ++duplicates;
    if (example.empty()) example = slot->second + " and " + p.string();
    // Deterministic choice whatever the listing order: preferred extension, then smaller path.
    if (rank < rank_of[key] || (rank == rank_of[key] && p.string() < slot->second)) {
      slot->second = p.string();
      rank_of[key] = rank;
    }
  }
  if (duplicates > 0)
    log_warn(dataset, ": ", duplicates, " image names occur more than once under '", root.string(),
             "' (e.g. ", example, "); using the first by extension preference and path");
  return idx;
}

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

// Runs fn(i) for i in [0, n) on a few threads; rethrows the exception of the lowest failing i.
void parallel_for_n(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  {
    // OpenCV builds its codec registry lazily and without a lock: do it before the threads race.
    std::vector<uint8_t> png;
    cv::imencode(".png", cv::Mat::zeros(1, 1, CV_8U), png);
  }
  const int64_t threads =
      std::min<int64_t>(n, std::max(1u, std::min(8u, std::thread::hardware_concurrency())));
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::exception_ptr error;
  int64_t error_at = n;
  const auto work = [&]() {
    for (int64_t i; (i = next++) < n;) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (i < error_at) error_at = i, error = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

void write_mask_png(const fs::path& path, const cv::Mat& mask) {
  if (!cv::imwrite(path.string(), mask))
    raise<DataError>("cannot write mask '", path.string(), "'");
}

void make_dirs(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) raise<DataError>("cannot create folder '", dir.string(), "': ", ec.message());
}

// ---- Official CSVs ------------------------------------------------------------------------------

// A CSV with a header row; columns by trimmed name (empty names, e.g. a trailing comma, ignored).
struct CsvTable {
  std::string file;
  std::vector<CsvRecord> records;  // [0] is the header
  std::vector<std::string> names;
  std::unordered_map<std::string, size_t> cols;

  int64_t find(const std::string& name) const {
    const auto it = cols.find(name);
    return it == cols.end() ? -1 : static_cast<int64_t>(it->second);
  }
  size_t col(const std::string& name) const {
    const int64_t c = find(name);
    if (c < 0) {
      std::vector<std::string> have;
      for (const auto& n : names)
        if (!n.empty()) have.push_back("'" + n + "'");
      raise<DataError>(at(file, records[0].line), "missing column '", name, "' (columns: ",
                       join(have), ")");
    }
    return static_cast<size_t>(c);
  }
  // Trimmed field c of a record; DataError when the record is too short.
  std::string cell(const CsvRecord& r, size_t c) const {
    if (c >= r.fields.size())
      raise<DataError>(at(file, r.line), r.fields.size(), " fields, but column '", names[c],
                       "' is field ", c + 1);
    return trim(r.fields[c]);
  }
};

CsvTable read_csv_table(const std::string& path) {
  CsvTable t;
  t.file = path;
  t.records = csv_parse(read_file_gunzip(path), path);
  if (t.records.empty()) raise<DataError>(path, ": empty file (no header row)");
  for (size_t c = 0; c < t.records[0].fields.size(); ++c) {
    const std::string n = trim(t.records[0].fields[c]);
    t.names.push_back(n);
    if (!n.empty()) t.cols.emplace(n, c);
  }
  return t;
}

struct TextLine {
  int64_t line;
  std::string text;  // trimmed, never empty
};

// Non-blank lines of a text file (CR tolerated; a missing final newline is fine).
std::vector<TextLine> read_lines(const std::string& path) {
  const std::string text = read_file_gunzip(path);
  std::vector<TextLine> out;
  int64_t line = 0;
  size_t b = 0;
  while (b <= text.size()) {
    size_t e = text.find('\n', b);
    if (e == std::string::npos) e = text.size();
    ++line;
    std::string s = trim(text.substr(b, e - b));
    if (!s.empty()) out.push_back({line, std::move(s)});
    b = e + 1;
  }
  return out;
}

// ---- Writing manifests --------------------------------------------------------------------------

struct OutRow {
  std::string path;  // absolute (or relative to the working folder)
  std::string split, patient, view;
  std::vector<float> labels;  // NaN = missing
  std::string mask;           // "" = none
  std::string boxes;
};

class ManifestWriter {
 public:
  ManifestWriter(std::string out, std::vector<std::string> labels, bool view, bool mask,
                 bool boxes)
      : out_(std::move(out)), labels_(std::move(labels)), view_(view), mask_(mask), boxes_(boxes) {
    if (out_.empty()) raise<ConfigError>("no output manifest given");
  }

  void add(OutRow r) { rows_.push_back(std::move(r)); }
  size_t size() const { return rows_.size(); }

  ManifestSummary write(int64_t skipped, int64_t masks) {
    ManifestSummary s;
    s.out = out_;
    s.skipped = skipped;
    s.masks = masks;
    std::ostringstream os;
    os << "path,split,patient_id";
    if (view_) os << ",view";
    for (const auto& l : labels_) os << "," << csv_quote(l);
    if (mask_) os << ",mask";
    if (boxes_) os << ",boxes";
    os << "\n";
    std::unordered_map<std::string, std::string> patient_split;
    int64_t mixed = 0;
    std::string mixed_example;
    for (const OutRow& r : rows_) {
      EVAX_ASSERT(r.labels.size() == labels_.size());
      os << csv_quote(manifest_path_for(out_, r.path)) << "," << r.split << ","
         << csv_quote(r.patient);
      if (view_) os << "," << csv_quote(r.view);
      for (float v : r.labels) os << "," << (std::isnan(v) ? "" : v > 0.5f ? "1" : "0");
      if (mask_) os << "," << (r.mask.empty() ? "" : csv_quote(manifest_path_for(out_, r.mask)));
      if (boxes_) os << "," << csv_quote(r.boxes);
      os << "\n";
      ++s.rows;
      if (r.split == "train") ++s.train;
      else if (r.split == "val") ++s.val;
      else if (r.split == "test") ++s.test;
      else EVAX_ASSERT(false, "split ", r.split);
      const auto [it, fresh] = patient_split.emplace(r.patient, r.split);
      if (!fresh && it->second != r.split && mixed++ == 0) mixed_example = r.patient;
    }
    if (mixed > 0)
      log_warn(out_, ": ", mixed, " rows share a patient with another split (e.g. '",
               mixed_example, "'); manifest_load rejects this unless check_patient_splits is off");
    const fs::path parent = fs::path(out_).parent_path();
    if (!parent.empty()) make_dirs(parent);
    write_file_atomic(out_, os.str());
    return s;
  }

 private:
  std::string out_;
  std::vector<std::string> labels_;
  bool view_, mask_, boxes_;
  std::vector<OutRow> rows_;
};

// Whether an image exists; when it does not, DataError naming `where` unless skipping.
bool image_present(const std::string& path, const AdapterOptions& o, const std::string& where) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return true;
  if (o.skip_missing_images) return false;
  raise<DataError>(where, "image '", path, "' does not exist (skip such rows with "
                   "--skip-missing)");
}

// ---- ChestX-ray14 -------------------------------------------------------------------------------

struct Cxr14Entry {
  std::string image, patient, view;
  std::vector<float> labels;
  int64_t line = 0;
};

std::string pad8(const std::string& digits) {
  return digits.size() >= 8 ? digits : std::string(8 - digits.size(), '0') + digits;
}

// Patient of a CXR14 file name (`00000001_000.png` → 00000001); the stem when it has no '_'.
std::string cxr14_patient_from_name(const std::string& name) {
  const std::string stem = fs::path(name).stem().string();
  const size_t u = stem.find('_');
  return u == std::string::npos ? stem : stem.substr(0, u);
}

std::vector<Cxr14Entry> read_data_entry(const std::string& path) {
  const CsvTable t = read_csv_table(path);
  const size_t c_img = t.col("Image Index"), c_lab = t.col("Finding Labels");
  const size_t c_pid = t.col("Patient ID"), c_view = t.col("View Position");
  std::vector<Cxr14Entry> out;
  std::unordered_map<std::string, int64_t> seen;
  for (size_t r = 1; r < t.records.size(); ++r) {
    const CsvRecord& rec = t.records[r];
    Cxr14Entry e;
    e.line = rec.line;
    e.image = t.cell(rec, c_img);
    if (e.image.empty()) raise<DataError>(at(path, rec.line), "empty 'Image Index'");
    const auto [it, fresh] = seen.emplace(e.image, rec.line);
    if (!fresh)
      raise<DataError>(at(path, rec.line), "image '", e.image, "' repeated (first on line ",
                       it->second, ")");
    const std::string pid = t.cell(rec, c_pid);
    if (!all_digits(pid))
      raise<DataError>(at(path, rec.line), "column 'Patient ID': bad value '", pid,
                       "' (want digits)");
    e.patient = pad8(pid);
    e.view = upper(t.cell(rec, c_view));
    e.labels.assign(kCxr14Labels.size(), 0.0f);
    const std::string findings = t.cell(rec, c_lab);
    for (const std::string& raw : split_on(findings, '|')) {
      const std::string f = trim(raw);
      if (f == "No Finding") {
        if (findings != "No Finding")
          raise<DataError>(at(path, rec.line), "column 'Finding Labels': 'No Finding' together "
                           "with findings in '", findings, "'");
        continue;
      }
      const auto k = std::find(kCxr14Labels.begin(), kCxr14Labels.end(), f);
      if (k == kCxr14Labels.end())
        raise<DataError>(at(path, rec.line), "column 'Finding Labels': unknown finding '", f,
                         "' (known: ", join(kCxr14Labels), ", No Finding)");
      e.labels[static_cast<size_t>(k - kCxr14Labels.begin())] = 1.0f;
    }
    out.push_back(std::move(e));
  }
  return out;
}

std::string find_data_entry(const fs::path& root) {
  return find_file(root, {"Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv"}, 1);
}

// ---- CheXpert helpers ---------------------------------------------------------------------------

const char* policy_name(UncertainPolicy p) {
  switch (p) {
    case UncertainPolicy::kOnes: return "ones";
    case UncertainPolicy::kZeros: return "zeros";
    case UncertainPolicy::kIgnore: return "ignore";
  }
  return "?";
}

UncertainPolicy policy_for(const CheXpertOptions& o, const std::string& label) {
  const auto it = o.uncertain.find(label);
  if (it != o.uncertain.end()) return it->second;
  if (o.uncertain_default) return *o.uncertain_default;
  // LibAUC / EVA-X: U-Ones for Atelectasis and Edema, U-Zeros for the rest.
  return label == "Atelectasis" || label == "Edema" ? UncertainPolicy::kOnes
                                                    : UncertainPolicy::kZeros;
}

// ---- Masks --------------------------------------------------------------------------------------

// Runs [start, start + length) (0-based pixels) of an RLE over `total` pixels. Relative (SIIM
// stage 1): each start counts from the end of the previous run. Standard (Kaggle): 1-based
// absolute starts, which must increase; a file in the other format fails loudly instead of
// painting a wrong mask.
std::vector<std::pair<int64_t, int64_t>> parse_rle(const std::string& rle, int64_t total,
                                                   RleFormat format, const std::string& where) {
  EVAX_ASSERT(format != RleFormat::kAuto, "parse_rle needs a concrete RLE format");
  const std::vector<std::string> toks = split_blanks(rle);
  if (toks.size() % 2 != 0)
    raise<DataError>(where, "RLE has an odd number of values (", toks.size(), ")");
  std::vector<std::pair<int64_t, int64_t>> runs;
  int64_t pos = 0;
  for (size_t i = 0; i < toks.size(); i += 2) {
    int64_t v[2];
    for (int k = 0; k < 2; ++k) {
      const std::string& s = toks[i + static_cast<size_t>(k)];
      if (!all_digits(s) || s.size() > 12)
        raise<DataError>(where, "RLE value '", s, "' is not a non-negative integer");
      v[k] = std::stoll(s);
    }
    if (format == RleFormat::kRelative) {
      pos += v[0];
      if (pos + v[1] > total)
        raise<DataError>(where, "RLE run at ", pos, " of length ", v[1], " ends past the ", total,
                         " pixels of the mask (a standard, absolute RLE? see --rle)");
    } else {
      if (v[0] < 1 || v[0] - 1 < pos)
        raise<DataError>(where, "standard RLE start ", v[0],
                         v[0] < 1 ? " is not 1-based"
                                  : " does not lie after the previous run (a relative, SIIM "
                                    "stage-1 RLE? see --rle)");
      pos = v[0] - 1;
      if (pos + v[1] > total)
        raise<DataError>(where, "RLE run at ", pos, " of length ", v[1], " ends past the ", total,
                         " pixels of the mask");
    }
    runs.emplace_back(pos, v[1]);
    pos += v[1];
  }
  return runs;
}

// Sets run pixels to 255; pixel k is column k / rows, row k % rows (column-major).
void paint_runs(cv::Mat& mask, const std::vector<std::pair<int64_t, int64_t>>& runs) {
  const int64_t rows = mask.rows;
  for (const auto& [start, len] : runs)
    for (int64_t k = start; k < start + len; ++k)
      mask.at<uint8_t>(static_cast<int>(k % rows), static_cast<int>(k / rows)) = 255;
}

struct RleItem {
  std::string id;
  int64_t line = 0;  // first row of the image
  std::vector<std::vector<std::pair<int64_t, int64_t>>> runs;
  bool positive = false;
};

// A box as read from an official CSV (double: NIH coordinates carry 12 decimals).
struct SrcBox {
  std::string label;
  double x = 0, y = 0, w = 0, h = 0;
};

struct BoxItem {
  std::string id;
  int64_t line = 0;
  bool positive = false;
  std::vector<SrcBox> boxes;
};

std::string boxes_text(const std::vector<SrcBox>& boxes) {
  std::string s;
  for (const SrcBox& b : boxes)
    s += (s.empty() ? "" : ";") + b.label + ":" + fmt_num(b.x) + "," + fmt_num(b.y) + "," +
         fmt_num(b.w) + "," + fmt_num(b.h);
  return s;
}

// Split of each id in EVA-X's segmentation lists (train.txt, test.txt), keeping list order.
struct ListedId {
  std::string id, split, where;  // where = "file:line: "
};

std::vector<TextLine> read_id_lines(const std::string& path) {
  std::vector<TextLine> lines = read_lines(path);
  std::unordered_map<std::string, int64_t> seen;
  for (const TextLine& l : lines) {
    if (split_blanks(l.text).size() != 1)
      raise<DataError>(at(path, l.line), "want one id per line, got '", l.text, "'");
    const auto [it, fresh] = seen.emplace(l.text, l.line);
    if (!fresh)
      raise<DataError>(at(path, l.line), "id '", l.text, "' repeated (first on line ", it->second,
                       ")");
  }
  return lines;
}

// EVA-X's segmentation lists (train.txt, test.txt) in list order.
std::vector<ListedId> read_seg_lists(const std::string& dir, const char* sub) {
  const fs::path d = lists_dir(dir, sub, "train.txt");
  std::vector<ListedId> out;
  std::unordered_map<std::string, std::string> where;
  for (const char* split : {"train", "test"}) {
    const std::string file = (d / (std::string(split) + ".txt")).string();
    for (const TextLine& l : read_id_lines(file)) {
      const auto [it, fresh] = where.emplace(l.text, at(file, l.line));
      if (!fresh)
        raise<DataError>(at(file, l.line), "id '", l.text, "' is also listed at ", it->second);
      out.push_back({l.text, split, at(file, l.line)});
    }
  }
  return out;
}

// ---- Segmentation folder pairs ------------------------------------------------------------------

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
  cv::Mat m = cv::imread(p.string(), cv::IMREAD_UNCHANGED);
  if (m.empty()) raise<DataError>("cannot read mask '", p.string(), "'");
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

bool is_frontal_view(const std::string& view) {
  const std::string v = upper(trim(view));
  return v.empty() || v == "PA" || v == "AP" || v == "FRONTAL";
}

}  // namespace

// ---- Building blocks ----------------------------------------------------------------------------

std::string csv_quote(const std::string& field) {
  const bool quote = field.find_first_of(",\"\r\n") != std::string::npos ||
                     (!field.empty() && (std::isspace(static_cast<unsigned char>(field.front())) ||
                                         std::isspace(static_cast<unsigned char>(field.back()))));
  if (!quote) return field;
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string manifest_path_for(const std::string& manifest, const std::string& file) {
  const fs::path dir = fs::absolute(fs::path(manifest)).lexically_normal().parent_path();
  const fs::path p = fs::absolute(fs::path(file)).lexically_normal();
  const fs::path rel = p.lexically_relative(dir);
  if (!rel.empty() && *rel.begin() != ".." && *rel.begin() != ".") return rel.generic_string();
  return p.string();
}

std::vector<Cxr14ListEntry> read_cxr14_split_list(const std::string& path) {
  std::vector<Cxr14ListEntry> out;
  std::unordered_map<std::string, int64_t> seen;
  for (const TextLine& l : read_lines(path)) {
    const std::vector<std::string> f = split_blanks(l.text);
    if (f.size() != 1 + kCxr14Labels.size())
      raise<DataError>(at(path, l.line), f.size(), " fields in '", l.text, "' (want a file name "
                       "and ", kCxr14Labels.size(), " labels 0/1)");
    Cxr14ListEntry e;
    e.image = f[0];
    e.line = l.line;
    for (size_t k = 1; k < f.size(); ++k) {
      if (f[k] != "0" && f[k] != "1")
        raise<DataError>(at(path, l.line), "label ", k, " (", kCxr14Labels[k - 1], ") is '", f[k],
                         "' (want 0 or 1)");
      e.labels.push_back(f[k] == "1" ? 1.0f : 0.0f);
    }
    const auto [it, fresh] = seen.emplace(e.image, l.line);
    if (!fresh)
      raise<DataError>(at(path, l.line), "image '", e.image, "' repeated (first on line ",
                       it->second, ")");
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<CovidxEntry> read_covidx_list(const std::string& path) {
  std::vector<CovidxEntry> out;
  for (const TextLine& l : read_lines(path)) {
    const std::vector<std::string> f = split_blanks(l.text);
    if (f.size() != 4)
      raise<DataError>(at(path, l.line), f.size(), " fields in '", l.text,
                       "' (want: patient_id filename class source)");
    out.push_back({f[0], f[1], f[2], f[3], l.line});
  }
  return out;
}

std::vector<std::string> read_id_list(const std::string& path) {
  std::vector<std::string> out;
  for (TextLine& l : read_id_lines(path)) out.push_back(std::move(l.text));
  return out;
}

void rle_decode_into(const std::string& rle, cv::Mat& mask, const std::string& where,
                     RleFormat format) {
  EVAX_ASSERT(mask.type() == CV_8U && !mask.empty());
  paint_runs(mask, parse_rle(rle, static_cast<int64_t>(mask.total()), format, where));
}

std::string rle_encode(const cv::Mat& mask) {
  EVAX_ASSERT(mask.type() == CV_8U);
  std::string out;
  const int64_t rows = mask.rows, total = static_cast<int64_t>(mask.total());
  int64_t prev_end = 0;
  for (int64_t k = 0; k < total;) {
    const auto on = [&](int64_t i) {
      return mask.at<uint8_t>(static_cast<int>(i % rows), static_cast<int>(i / rows)) != 0;
    };
    if (!on(k)) {
      ++k;
      continue;
    }
    int64_t e = k;
    while (e < total && on(e)) ++e;
    out += (out.empty() ? "" : " ") + std::to_string(k - prev_end) + " " + std::to_string(e - k);
    prev_end = e;
    k = e;
  }
  return out.empty() ? "-1" : out;
}

void parse_uncertain_spec(const std::string& spec, CheXpertOptions* options) {
  const auto policy = [&](const std::string& s) {
    const std::string v = lower(trim(s));
    if (v == "ones") return UncertainPolicy::kOnes;
    if (v == "zeros") return UncertainPolicy::kZeros;
    if (v == "ignore") return UncertainPolicy::kIgnore;
    raise<UsageError>("--uncertain: unknown policy '", trim(s), "' in '", spec,
                      "' (want ones, zeros or ignore)");
  };
  for (const std::string& raw : split_on(spec, ',')) {
    const std::string item = trim(raw);
    if (item.empty()) raise<UsageError>("--uncertain: empty item in '", spec, "'");
    const size_t eq = item.find('=');
    if (eq == std::string::npos) {
      options->uncertain_default = policy(item);
      continue;
    }
    const std::string label = trim(item.substr(0, eq));
    const auto k = std::find_if(kChexpertLabels.begin(), kChexpertLabels.end(),
                                [&](const std::string& n) { return lower(n) == lower(label); });
    if (k == kChexpertLabels.end())
      raise<UsageError>("--uncertain: unknown label '", label, "' (labels: ",
                        join(kChexpertLabels), ")");
    options->uncertain[*k] = policy(item.substr(eq + 1));
  }
}

// ---- Adapters -----------------------------------------------------------------------------------

ManifestSummary build_cxr14_manifest(const AdapterOptions& o) {
  const fs::path root = require_root(o.root, "cxr14");
  const std::string entry_csv = find_data_entry(root);
  std::vector<Cxr14Entry> entries;
  if (!entry_csv.empty()) entries = read_data_entry(entry_csv);
  std::unordered_map<std::string, size_t> entry_of;
  for (size_t i = 0; i < entries.size(); ++i) entry_of.emplace(entries[i].image, i);
  const FileIndex images = index_files(root, {".png"}, false, masks_dir_of(o.out), "cxr14");

  ManifestWriter w(o.out, kCxr14Labels, true, false, false);
  int64_t skipped = 0;
  const auto add = [&](const std::string& image, const std::string& split,
                       const std::vector<float>& labels, const std::string& where) {
    const std::string* path = images.find(image);
    if (!path) {
      if (!o.skip_missing_images)
        raise<DataError>(where, "image '", image, "' not found under '", root.string(),
                         "' (skip such rows with --skip-missing)");
      ++skipped;
      return;
    }
    const auto e = entry_of.find(image);
    const bool known = e != entry_of.end();
    w.add({*path, split, known ? entries[e->second].patient : cxr14_patient_from_name(image),
           known ? entries[e->second].view : "", labels, "", ""});
  };

  if (!o.split_lists.empty()) {
    const fs::path dir = lists_dir(o.split_lists, "cxr14", "train_official.txt");
    std::unordered_map<std::string, std::string> listed;  // image -> file:line
    const std::pair<const char*, const char*> files[] = {{"train_official.txt", "train"},
                                                         {"val_official.txt", "val"},
                                                         {"test_official.txt", "test"}};
    for (const auto& [name, split] : files) {
      const std::string file = (dir / name).string();
      for (const Cxr14ListEntry& e : read_cxr14_split_list(file)) {
        const std::string where = at(file, e.line);
        const auto [it, fresh] = listed.emplace(e.image, where);
        if (!fresh)
          raise<DataError>(where, "image '", e.image, "' is also listed at ", it->second);
        add(e.image, split, e.labels, where);
      }
    }
    for (const Cxr14Entry& e : entries) skipped += listed.count(e.image) ? 0 : 1;
  } else {
    if (entry_csv.empty())
      raise<DataError>("cxr14: no Data_Entry_2017.csv in '", root.string(),
                       "' (or pass EVA-X split lists with --split-lists)");
    const std::string test_list = require_file(root, {"test_list.txt"}, 1, "cxr14");
    const std::string trainval_list = require_file(root, {"train_val_list.txt"}, 1, "cxr14");
    std::unordered_map<std::string, std::string> split_of;
    for (const auto& name : read_id_list(trainval_list)) split_of.emplace(name, "train");
    for (const auto& name : read_id_list(test_list)) {
      const auto [it, fresh] = split_of.emplace(name, "test");
      if (!fresh)
        raise<DataError>(test_list, ": image '", name, "' is also in ", trainval_list);
    }
    for (const Cxr14Entry& e : entries) {
      const auto s = split_of.find(e.image);
      if (s == split_of.end())
        raise<DataError>(at(entry_csv, e.line), "image '", e.image,
                         "' is in neither train_val_list.txt nor test_list.txt");
      add(e.image, s->second, e.labels, at(entry_csv, e.line));
    }
  }
  return w.write(skipped, 0);
}

ManifestSummary build_chexpert_manifest(const CheXpertOptions& o) {
  const fs::path root = require_root(o.root, "chexpert");
  check_split(o.eval_split, "chexpert: eval split");
  const std::string train_csv = require_file(root, {"train.csv"}, 1, "chexpert");
  const fs::path dir = fs::path(train_csv).parent_path();
  const std::string valid_csv = (dir / "valid.csv").string();
  if (!is_file(valid_csv))
    raise<DataError>("chexpert: no valid.csv next to '", train_csv, "'");
  for (const auto& [label, p] : o.uncertain) {
    (void)p;
    if (std::find(kChexpertLabels.begin(), kChexpertLabels.end(), label) == kChexpertLabels.end())
      raise<ConfigError>("chexpert: uncertain policy for unknown label '", label, "' (labels: ",
                         join(kChexpertLabels), ")");
  }
  const std::vector<std::string>& labels = o.all_labels ? kChexpertLabels
                                                        : kChexpertCompetitionLabels;
  std::vector<UncertainPolicy> policies;
  for (const auto& l : labels) policies.push_back(policy_for(o, l));

  ManifestWriter w(o.out, labels, true, false, false);
  int64_t skipped = 0;
  for (const auto& [csv, split] : {std::make_pair(train_csv, std::string("train")),
                                   std::make_pair(valid_csv, o.eval_split)}) {
    const CsvTable t = read_csv_table(csv);
    const size_t c_path = t.col("Path"), c_fl = t.col("Frontal/Lateral"), c_view = t.col("AP/PA");
    std::vector<size_t> c_labels;
    for (const auto& l : labels) c_labels.push_back(t.col(l));
    for (size_t r = 1; r < t.records.size(); ++r) {
      const CsvRecord& rec = t.records[r];
      const std::string where = at(csv, rec.line);
      const std::string rel = t.cell(rec, c_path);
      if (rel.empty()) raise<DataError>(where, "empty 'Path'");
      const std::string fl = t.cell(rec, c_fl);
      if (fl != "Frontal" && fl != "Lateral")
        raise<DataError>(where, "column 'Frontal/Lateral': bad value '", fl,
                         "' (want Frontal or Lateral)");
      if (o.frontal_only && fl != "Frontal") {
        ++skipped;
        continue;
      }
      // Path = <dataset folder>/train/patientN/studyM/viewK.jpg: swap the first folder for ours.
      fs::path p(rel);
      auto part = p.begin();
      const std::string first = lower(part->string());
      fs::path image = dir;
      if (first != "train" && first != "valid" && first != "test") ++part;
      std::string patient;
      for (; part != p.end(); ++part) {
        const std::string s = part->string();
        if (s.size() > 7 && s.compare(0, 7, "patient") == 0 && all_digits(s.substr(7)))
          patient = s;
        image /= *part;
      }
      if (patient.empty())
        raise<DataError>(where, "column 'Path': no patientNNNNN folder in '", rel, "'");
      if (!image_present(image.string(), o, where)) {
        ++skipped;
        continue;
      }
      std::string view = "LATERAL";
      if (fl == "Frontal") {
        view = upper(t.cell(rec, c_view));
        if (view.empty()) view = "FRONTAL";
      }
      std::vector<float> values;
      for (size_t k = 0; k < labels.size(); ++k) {
        const std::string v = t.cell(rec, c_labels[k]);
        if (v.empty()) {
          values.push_back(o.blank_as_zero ? 0.0f : kMissing);
        } else if (v == "1" || v == "1.0") {
          values.push_back(1.0f);
        } else if (v == "0" || v == "0.0") {
          values.push_back(0.0f);
        } else if (v == "-1" || v == "-1.0") {
          values.push_back(policies[k] == UncertainPolicy::kOnes    ? 1.0f
                           : policies[k] == UncertainPolicy::kZeros ? 0.0f
                                                                    : kMissing);
        } else {
          raise<DataError>(where, "column '", labels[k], "': bad value '", v,
                           "' (want 1.0, 0.0, -1.0 or empty)");
        }
      }
      w.add({image.string(), split, patient, view, values, "", ""});
    }
  }
  std::string pol;
  for (size_t k = 0; k < labels.size(); ++k)
    pol += (k ? ", " : "") + labels[k] + "=" + policy_name(policies[k]);
  log_debug("chexpert: uncertain policy ", pol);
  return w.write(skipped, 0);
}

ManifestSummary build_covidx_manifest(const CovidxOptions& o) {
  if (o.version != 3 && o.version != 4)
    raise<ConfigError>("covidx: unknown version ", o.version, " (want 3 or 4)");
  const fs::path root = require_root(o.root, "covidx");
  check_split(o.eval_split, "covidx: eval split");
  const bool v3 = o.version == 3;
  const std::vector<std::string> classes =
      v3 ? std::vector<std::string>{"normal", "pneumonia", "COVID-19"}
         : std::vector<std::string>{"negative", "positive"};
  const fs::path lists = o.split_lists.empty() ? root
                         : lists_dir(o.split_lists, v3 ? "covidx3" : "covidx4",
                                     v3 ? "train_COVIDx9A.txt" : "train.txt");
  // (list file, image folder, split, required)
  struct Part {
    std::string file, folder, split;
    bool required;
  };
  std::vector<Part> parts;
  const auto pick = [&](const std::vector<std::string>& names) {
    for (const auto& n : names)
      if (is_file(lists / n)) return (lists / n).string();
    return (lists / names[0]).string();
  };
  if (v3) {
    parts = {{pick({"train_COVIDx9A.txt", "train.txt"}), "train", "train", true},
             {pick({"test_COVIDx9A.txt", "test.txt"}), "test", "test", true}};
  } else {
    parts = {{(lists / "train.txt").string(), "train", "train", true},
             {(lists / "val.txt").string(), "val", o.eval_split, true},
             {(lists / "test.txt").string(), "test", "test", false}};
  }

  ManifestWriter w(o.out, classes, false, false, false);
  int64_t skipped = 0;
  for (const Part& part : parts) {
    if (!is_file(part.file)) {
      if (part.required) raise<DataError>("covidx: no list file '", part.file, "'");
      continue;
    }
    std::unordered_map<std::string, int64_t> seen;
    for (const CovidxEntry& e : read_covidx_list(part.file)) {
      const std::string where = at(part.file, e.line);
      const auto k = std::find_if(classes.begin(), classes.end(), [&](const std::string& c) {
        return lower(c) == lower(e.label);
      });
      if (k == classes.end())
        raise<DataError>(where, "unknown class '", e.label, "' for COVIDx-", o.version,
                         " (want ", join(classes), ")");
      const auto [it, fresh] = seen.emplace(e.filename, e.line);
      if (!fresh) {
        log_warn(where, "image '", e.filename, "' repeated (first on line ", it->second,
                 "); keeping the first");
        ++skipped;
        continue;
      }
      const std::string image = (root / part.folder / e.filename).string();
      if (!image_present(image, o, where)) {
        ++skipped;
        continue;
      }
      std::vector<float> onehot(classes.size(), 0.0f);
      onehot[static_cast<size_t>(k - classes.begin())] = 1.0f;
      w.add({image, part.split, e.patient_id, "", onehot, "", ""});
    }
  }
  return w.write(skipped, 0);
}

ManifestSummary build_mimic_manifest(const AdapterOptions& o) {
  const fs::path root = require_root(o.root, "mimic");
  const std::string meta_csv = require_file(root, {"mimic-cxr-2.0.0-metadata.csv"}, 1, "mimic");
  const std::string split_csv = require_file(root, {"mimic-cxr-2.0.0-split.csv"}, 1, "mimic");
  const fs::path base = fs::path(meta_csv).parent_path();

  std::unordered_map<std::string, std::string> split_of;
  {
    const CsvTable t = read_csv_table(split_csv);
    const size_t c_id = t.col("dicom_id"), c_split = t.col("split");
    for (size_t r = 1; r < t.records.size(); ++r) {
      const CsvRecord& rec = t.records[r];
      const std::string s = t.cell(rec, c_split);
      const std::string split = s == "validate" ? "val" : s;
      if (split != "train" && split != "val" && split != "test")
        raise<DataError>(at(split_csv, rec.line), "column 'split': bad value '", s,
                         "' (want train, validate or test)");
      split_of[t.cell(rec, c_id)] = split;
    }
  }
  const CsvTable t = read_csv_table(meta_csv);
  const size_t c_id = t.col("dicom_id"), c_subject = t.col("subject_id");
  const size_t c_study = t.col("study_id"), c_view = t.col("ViewPosition");
  ManifestWriter w(o.out, {}, true, false, false);
  int64_t skipped = 0;
  for (size_t r = 1; r < t.records.size(); ++r) {
    const CsvRecord& rec = t.records[r];
    const std::string where = at(meta_csv, rec.line);
    const std::string view = upper(t.cell(rec, c_view));
    if (view != "PA" && view != "AP") {
      ++skipped;
      continue;
    }
    const std::string id = t.cell(rec, c_id), subject = t.cell(rec, c_subject);
    const std::string study = t.cell(rec, c_study);
    if (id.empty()) raise<DataError>(where, "empty 'dicom_id'");
    if (!all_digits(subject) || subject.size() < 2)
      raise<DataError>(where, "column 'subject_id': bad value '", subject, "' (want digits)");
    if (!all_digits(study))
      raise<DataError>(where, "column 'study_id': bad value '", study, "' (want digits)");
    const auto s = split_of.find(id);
    if (s == split_of.end())
      raise<DataError>(where, "dicom_id '", id, "' is not in ", split_csv);
    const fs::path image = base / "files" / ("p" + subject.substr(0, 2)) / ("p" + subject) /
                           ("s" + study) / (id + ".jpg");
    if (!image_present(image.string(), o, where)) {
      ++skipped;
      continue;
    }
    w.add({image.string(), s->second, subject, view, {}, "", ""});
  }
  return w.write(skipped, 0);
}

// The (item, split) pairs of a mask dataset: those of the EVA-X split lists when given (the rest
// counted as skipped), else every item (positives only on request) as train.
template <class Item>
std::vector<std::pair<size_t, std::string>> choose_items(
    const MaskAdapterOptions& o, const char* dataset, const char* noun,
    const std::unordered_map<std::string, size_t>& item_of, const std::vector<Item>& items,
    const std::string& csv, int64_t* skipped) {
  std::vector<std::pair<size_t, std::string>> chosen;
  if (!o.split_lists.empty()) {
    for (const ListedId& l : read_seg_lists(o.split_lists, dataset)) {
      const auto it = item_of.find(l.id);
      if (it == item_of.end())
        raise<DataError>(l.where, "listed ", noun, " '", l.id, "' is not in ", csv);
      chosen.emplace_back(it->second, l.split);
    }
    *skipped = static_cast<int64_t>(items.size() - chosen.size());
  } else {
    for (size_t i = 0; i < items.size(); ++i) {
      if (o.positives_only && !items[i].positive) ++*skipped;
      else chosen.emplace_back(i, "train");
    }
  }
  return chosen;
}

// Adds the manifest rows of the chosen items (label 1 when positive, one mask path each) and
// returns their indices; images that cannot be found are skipped on request, else a DataError.
template <class Item, class BoxesFn>
std::vector<size_t> add_mask_rows(const MaskAdapterOptions& o, const std::vector<Item>& items,
                                  const std::vector<std::pair<size_t, std::string>>& chosen,
                                  const FileIndex& images, const fs::path& root,
                                  const std::string& csv, const fs::path& out_masks,
                                  ManifestWriter* w, BoxesFn boxes_of, int64_t* skipped) {
  std::vector<size_t> written;
  for (const auto& [i, split] : chosen) {
    const Item& item = items[i];
    const std::string* path = images.find(item.id);
    if (!path) {
      if (o.skip_missing_images) {
        ++*skipped;
        continue;
      }
      raise<DataError>(at(csv, item.line), "no image named '", item.id, "' (.dcm, .png or .jpg) "
                       "under '", root.string(), "' (skip such rows with --skip-missing)");
    }
    written.push_back(i);
    w->add({*path, split, item.id, "", {item.positive ? 1.0f : 0.0f},
            (out_masks / (item.id + ".png")).string(), boxes_of(item)});
  }
  return written;
}

ManifestSummary build_siim_manifest(const MaskAdapterOptions& o) {
  const fs::path root = require_root(o.root, "siim");
  if (o.mask_size < 1 || o.mask_size > 16384)
    raise<ConfigError>("siim: mask size ", o.mask_size, " is out of [1, 16384]");
  // train-rle.csv: stage 1, and the stage-2 re-release EVA-X used (relative RLE);
  // stage_2_train.csv: Kaggle's stage-2 file (standard RLE).
  const std::string csv = require_file(root, {"train-rle.csv", "stage_2_train.csv"}, 1, "siim");
  RleFormat format = o.rle;
  if (format == RleFormat::kAuto)
    format = fs::path(csv).filename().string().rfind("stage_2_train.csv", 0) == 0
                 ? RleFormat::kStandard
                 : RleFormat::kRelative;
  const fs::path out_masks = masks_dir_of(o.out);
  const FileIndex images =
      index_files(root, {".dcm", ".png", ".jpg", ".jpeg"}, true, out_masks, "siim");
  const int64_t total = o.mask_size * o.mask_size;

  const CsvTable t = read_csv_table(csv);
  const size_t c_id = t.col("ImageId"), c_rle = t.col("EncodedPixels");
  std::vector<RleItem> items;
  std::unordered_map<std::string, size_t> item_of;
  for (size_t r = 1; r < t.records.size(); ++r) {
    const CsvRecord& rec = t.records[r];
    const std::string id = t.cell(rec, c_id), rle = t.cell(rec, c_rle);
    if (id.empty()) raise<DataError>(at(csv, rec.line), "empty 'ImageId'");
    const auto [it, fresh] = item_of.emplace(id, items.size());
    if (fresh) items.push_back({id, rec.line, {}, false});
    RleItem& item = items[it->second];
    if (rle == "-1") continue;
    item.runs.push_back(
        parse_rle(rle, total, format, at(csv, rec.line) + "column 'EncodedPixels': "));
    item.positive = true;
  }

  int64_t skipped = 0;
  const auto chosen = choose_items(o, "siim", "image", item_of, items, csv, &skipped);

  ManifestWriter w(o.out, {"Pneumothorax"}, false, true, false);
  const std::vector<size_t> written = add_mask_rows(
      o, items, chosen, images, root, csv, out_masks, &w, [](const RleItem&) { return std::string(); },
      &skipped);
  make_dirs(out_masks);
  parallel_for_n(static_cast<int64_t>(written.size()), [&](int64_t k) {
    const RleItem& item = items[written[static_cast<size_t>(k)]];
    cv::Mat mask = cv::Mat::zeros(static_cast<int>(o.mask_size), static_cast<int>(o.mask_size),
                                  CV_8U);
    for (const auto& runs : item.runs) paint_runs(mask, runs);
    write_mask_png(out_masks / (item.id + ".png"), mask);
  });
  return w.write(skipped, static_cast<int64_t>(written.size()));
}

ManifestSummary build_rsna_manifest(const MaskAdapterOptions& o) {
  const fs::path root = require_root(o.root, "rsna");
  if (o.mask_size < 1 || o.mask_size > 16384)
    raise<ConfigError>("rsna: mask size ", o.mask_size, " is out of [1, 16384]");
  const std::string csv =
      require_file(root, {"stage_2_train_labels.csv", "stage_1_train_labels.csv"}, 1, "rsna");
  const fs::path out_masks = masks_dir_of(o.out);
  const FileIndex images =
      index_files(root, {".dcm", ".png", ".jpg", ".jpeg"}, true, out_masks, "rsna");

  const CsvTable t = read_csv_table(csv);
  const size_t c_id = t.col("patientId"), c_target = t.col("Target");
  const size_t c_box[4] = {t.col("x"), t.col("y"), t.col("width"), t.col("height")};
  const char* box_names[4] = {"x", "y", "width", "height"};
  std::vector<BoxItem> items;
  std::unordered_map<std::string, size_t> item_of;
  for (size_t r = 1; r < t.records.size(); ++r) {
    const CsvRecord& rec = t.records[r];
    const std::string where = at(csv, rec.line);
    const std::string id = t.cell(rec, c_id), target = t.cell(rec, c_target);
    if (id.empty()) raise<DataError>(where, "empty 'patientId'");
    if (target != "0" && target != "1")
      raise<DataError>(where, "column 'Target': bad value '", target, "' (want 0 or 1)");
    const bool positive = target == "1";
    const auto [it, fresh] = item_of.emplace(id, items.size());
    if (fresh) items.push_back({id, rec.line, positive, {}});
    BoxItem& item = items[it->second];
    if (item.positive != positive)
      raise<DataError>(where, "patient '", id, "' has Target ", target, " here but ",
                       item.positive ? 1 : 0, " on line ", item.line);
    double v[4];
    for (int k = 0; k < 4; ++k) {
      const std::string s = t.cell(rec, c_box[k]);
      if (!positive) {
        if (!s.empty())
          raise<DataError>(where, "column '", box_names[k], "': value '", s,
                           "' on a Target 0 row (want empty)");
        continue;
      }
      if (!parse_double(s, &v[k]))
        raise<DataError>(where, "column '", box_names[k], "': bad value '", s,
                         "' (want a number)");
    }
    if (!positive) continue;
    if (!(v[2] > 0 && v[3] > 0))
      raise<DataError>(where, "box width and height must be > 0, got ", fmt_num(v[2]), " x ",
                       fmt_num(v[3]));
    item.boxes.push_back({"Pneumonia", v[0], v[1], v[2], v[3]});
  }

  int64_t skipped = 0;
  const auto chosen = choose_items(o, "rsna", "patient", item_of, items, csv, &skipped);

  ManifestWriter w(o.out, {"Pneumonia"}, false, true, true);
  const std::vector<size_t> written = add_mask_rows(
      o, items, chosen, images, root, csv, out_masks, &w,
      [](const BoxItem& item) { return boxes_text(item.boxes); }, &skipped);
  make_dirs(out_masks);
  const int side = static_cast<int>(o.mask_size);
  parallel_for_n(static_cast<int64_t>(written.size()), [&](int64_t k) {
    const BoxItem& item = items[written[static_cast<size_t>(k)]];
    cv::Mat mask = cv::Mat::zeros(side, side, CV_8U);
    for (const SrcBox& b : item.boxes) {
      const auto clampi = [side](double v) {
        return static_cast<int>(std::min<double>(side, std::max(0.0, std::round(v))));
      };
      const int x0 = clampi(b.x), x1 = clampi(b.x + b.w);
      const int y0 = clampi(b.y), y1 = clampi(b.y + b.h);
      if (x1 > x0 && y1 > y0) mask(cv::Rect(x0, y0, x1 - x0, y1 - y0)).setTo(255);
    }
    write_mask_png(out_masks / (item.id + ".png"), mask);
  });
  return w.write(skipped, static_cast<int64_t>(written.size()));
}

ManifestSummary build_lung_manifest(const SegPairsOptions& options) {
  return build_seg_pairs(options, "lung");
}

ManifestSummary build_shenzhen_manifest(const SegPairsOptions& options) {
  return build_seg_pairs(options, "shenzhen");
}

ManifestSummary build_nih_bbox_manifest(const AdapterOptions& o) {
  const fs::path root = require_root(o.root, "nih-bbox");
  const std::string csv = require_file(root, {"BBox_List_2017.csv"}, 1, "nih-bbox");
  const std::string entry_csv = find_data_entry(root);
  std::unordered_map<std::string, std::pair<std::string, std::string>> entry;  // patient, view
  if (!entry_csv.empty())
    for (const Cxr14Entry& e : read_data_entry(entry_csv))
      entry.emplace(e.image, std::make_pair(e.patient, e.view));
  const FileIndex images = index_files(root, {".png"}, false, masks_dir_of(o.out), "nih-bbox");

  const CsvTable t = read_csv_table(csv);
  const size_t c_img = t.col("Image Index"), c_label = t.col("Finding Label");
  const size_t c_x = t.col("Bbox [x");
  std::vector<BoxItem> items;
  std::unordered_map<std::string, size_t> item_of;
  for (size_t r = 1; r < t.records.size(); ++r) {
    const CsvRecord& rec = t.records[r];
    const std::string where = at(csv, rec.line);
    const std::string image = t.cell(rec, c_img);
    if (image.empty()) raise<DataError>(where, "empty 'Image Index'");
    std::string label = t.cell(rec, c_label);
    if (label == "Infiltrate") label = "Infiltration";  // BBox spelling → CXR14 column name
    if (std::find(kCxr14Labels.begin(), kCxr14Labels.end(), label) == kCxr14Labels.end())
      raise<DataError>(where, "column 'Finding Label': unknown finding '", t.cell(rec, c_label),
                       "' (known: ", join(kCxr14Labels), ", Infiltrate)");
    double v[4];
    const char* names[4] = {"Bbox [x", "y", "w", "h]"};
    for (size_t k = 0; k < 4; ++k) {
      if (c_x + k >= t.names.size())
        raise<DataError>(at(csv, t.records[0].line), "the header has no '", names[k], "' column");
      const std::string s = t.cell(rec, c_x + k);
      if (!parse_double(s, &v[k]))
        raise<DataError>(where, "column '", names[k], "': bad value '", s, "' (want a number)");
    }
    if (!(v[2] > 0 && v[3] > 0))
      raise<DataError>(where, "box width and height must be > 0, got '", t.cell(rec, c_x + 2),
                       "' x '", t.cell(rec, c_x + 3), "'");
    const auto [it, fresh] = item_of.emplace(image, items.size());
    if (fresh) items.push_back({image, rec.line, true, {}});
    items[it->second].boxes.push_back({label, v[0], v[1], v[2], v[3]});
  }

  ManifestWriter w(o.out, {}, true, false, true);
  int64_t skipped = 0;
  for (const BoxItem& item : items) {
    const std::string* path = images.find(item.id);
    if (!path) {
      if (o.skip_missing_images) {
        ++skipped;
        continue;
      }
      raise<DataError>(at(csv, item.line), "image '", item.id, "' not found under '",
                       root.string(), "' (skip such rows with --skip-missing)");
    }
    const auto e = entry.find(item.id);
    w.add({*path, "test", e != entry.end() ? e->second.first : cxr14_patient_from_name(item.id),
           e != entry.end() ? e->second.second : "", {}, "", boxes_text(item.boxes)});
  }
  return w.write(skipped, 0);
}

MergeSummary merge_pretrain_manifests(const std::vector<std::string>& inputs,
                                      const std::string& out) {
  if (inputs.empty()) raise<ConfigError>("merge: no input manifests");
  ManifestOptions mo;
  mo.allow_uncertain = true;        // labels are dropped anyway
  mo.check_patient_splits = false;  // a leaking patient is dropped below, not an error
  std::vector<Manifest> ms;
  for (const auto& in : inputs) ms.push_back(manifest_load(in, mo));

  // Every test image by absolute path, and every test patient per input.
  std::unordered_set<std::string> test_paths;
  std::vector<std::unordered_set<std::string>> test_patients(ms.size());
  for (size_t i = 0; i < ms.size(); ++i)
    for (const ManifestRow& r : ms[i].rows)
      if (r.split == "test") {
        test_paths.insert(normal_abs(r.path));
        test_patients[i].insert(r.patient_id);
      }

  MergeSummary sum;
  ManifestWriter w(out, {}, true, false, false);
  std::unordered_set<std::string> names, written;
  for (size_t i = 0; i < ms.size(); ++i) {
    MergeSourceCounts c;
    c.file = inputs[i];
    c.source = fs::path(inputs[i]).stem().string();
    for (int k = 2; !names.insert(c.source).second; ++k)
      c.source = fs::path(inputs[i]).stem().string() + "_" + std::to_string(k);
    for (const ManifestRow& r : ms[i].rows) {
      ++c.rows;
      const std::string p = normal_abs(r.path);
      if (r.split == "test" || test_paths.count(p) || test_patients[i].count(r.patient_id)) {
        ++c.dropped_test;
      } else if (!is_frontal_view(r.view)) {
        ++c.dropped_lateral;
      } else if (!written.insert(p).second) {
        ++c.dropped_duplicate;
      } else {
        ++c.kept;
        w.add({p, r.split, c.source + "/" + r.patient_id, r.view, {}, "", ""});
      }
    }
    log_info("merge: ", c.source, " (", c.file, "): ", c.rows, " rows, kept ", c.kept,
             ", dropped as test ", c.dropped_test, ", as non-frontal ", c.dropped_lateral,
             ", as duplicate ", c.dropped_duplicate);
    sum.kept += c.kept;
    sum.sources.push_back(std::move(c));
  }
  w.write(0, 0);
  log_info("merge: wrote ", sum.kept, " images to ", out);
  return sum;
}

}  // namespace evax
