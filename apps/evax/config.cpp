// evax config: the configuration reference, generated from the decoders themselves (every key a
// command reads, its type, default, rules and description), and a config's effective values.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "commands.h"
#include "evax/core/files.h"
#include "evax/data/synth_config.h"
#include "evax/report/html.h"
#include "train_plans.h"

namespace fs = std::filesystem;

namespace evax::app {
namespace {

// One config-driven command: its decoder and the shipped configs that exercise its branches.
struct Schema {
  std::string name;                     // the command (section title)
  std::string summary;                  // one line on what its config drives
  std::vector<std::string> samples;     // configs/ files, relative; a trailing '/' = every *.yaml
  std::vector<std::string> exclude;     // files under a sample folder that belong elsewhere
  std::function<void(Config&)> decode;  // reads the keys (decode_all's argument)
};

std::vector<Schema> schemas() {
  return {
      {"pretrain", "MIM pretraining (`evax pretrain --config configs/pretrain/...`)",
       {"pretrain/"}, {"demo_teacher.yaml"}, [](Config& c) { pretrain_plan(c); }},
      {"teacher", "dense teacher training (`evax teacher`, the demo's first training stage)",
       {"pretrain/demo_teacher.yaml"}, {}, [](Config& c) { teacher_plan(c); }},
      {"finetune", "classification finetuning and evaluation (`evax finetune`, `evax evaluate`)",
       {"classify/"}, {}, [](Config& c) { finetune_plan(c); }},
      {"segment", "UperNet segmentation (`evax segment`, `evax evaluate`)", {"segment/"}, {},
       [](Config& c) { segment_plan(c); }},
      {"synth", "synthetic chest X-rays (`evax synth`; the `synth:` section of the demo)",
       {"synth/", "demo.yaml"}, {}, [](Config& c) { synth_options_from_config(c.view("synth")); }},
      {"demo", "the main job (`evax demo`): `synth:` and every pretrain key, plus its stages",
       {"demo.yaml"}, {}, demo_stage_keys},
  };
}

std::vector<std::string> sample_files(const std::string& dir, const Schema& s) {
  std::vector<std::string> out;
  for (const auto& rel : s.samples) {
    if (rel.back() != '/') {
      out.push_back(dir + "/" + rel);
      continue;
    }
    std::vector<std::string> found;
    for (const auto& e : fs::directory_iterator(dir + "/" + rel)) {
      const std::string f = e.path().filename().string();
      if (e.path().extension() == ".yaml" &&
          std::find(s.exclude.begin(), s.exclude.end(), f) == s.exclude.end())
        found.push_back(e.path().string());
    }
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

// Every key the schema's decoder reads: on the defaults first (their branch decides the defaults
// shown first), then on each shipped config (the branches those select).
ConfigKeys record(const Schema& s, const std::string& dir) {
  ConfigKeys keys;
  Config().record_keys(s.decode, &keys);
  for (const auto& f : sample_files(dir, s)) {
    ConfigKeys more;
    Config::load(f).record_keys(s.decode, &more);
    for (auto& [path, k] : more) {
      auto it = keys.find(path);
      if (it == keys.end()) {
        keys.emplace(path, std::move(k));  // a key only this config's branch reads
        continue;
      }
      // Another default on this branch; the rules stay those on the defaults (a rule's text may
      // carry the config's own numbers).
      for (auto& d : k.defaults)
        if (std::find(it->second.defaults.begin(), it->second.defaults.end(), d) ==
            it->second.defaults.end())
          it->second.defaults.push_back(d);
      if (it->second.type.empty()) it->second.type = k.type;
      if (it->second.doc.empty()) it->second.doc = k.doc;
    }
  }
  // Parents recorded only through has() on a section that has recorded children are structure.
  for (auto it = keys.begin(); it != keys.end();) {
    const auto next = std::next(it);
    const bool parent = next != keys.end() && next->first.rfind(it->first + ".", 0) == 0;
    if (parent && it->second.type.empty() && it->second.doc.empty() && it->second.rules.empty()) {
      it = keys.erase(it);
      continue;
    }
    if (parent && it->second.type.empty()) it->second.type = "map";  // a rule on a whole section
    it = next;
  }
  return keys;
}

bool same_spec(const ConfigKey& a, const ConfigKey& b) {
  return a.type == b.type && a.defaults == b.defaults && a.required == b.required &&
         a.free_form == b.free_form && a.rules == b.rules && a.doc == b.doc;
}

std::string sentence(std::string s) {
  if (!s.empty() && s.back() != '.' && s.back() != '?' && s.back() != '!') s += '.';
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

// A check()'s text as a sentence about the value: "must be > 0" → "Value must be > 0.", while a
// rule that names its own subject ("set a or b, not both") stands alone.
std::string rule_sentence(const std::string& r) {
  for (const char* verb : {"must ", "is ", "needs ", "may "})
    if (r.rfind(verb, 0) == 0) return sentence("Value " + r);
  return sentence(r);
}

void table(std::ostream& os, const std::vector<const ConfigKey*>& keys) {
  os << "| key | type | default | description |\n|---|---|---|---|\n";
  for (const ConfigKey* k : keys) {
    std::string dflt;
    if (k->required) {
      dflt = "**required**";
    } else if (k->defaults.empty()) {
      dflt = "—";
    } else {
      for (size_t i = 0; i < k->defaults.size(); ++i)
        dflt += (i ? " or " : "") + std::string("`") + k->defaults[i] + "`";
      if (k->defaults.size() > 1) dflt += " (depends on other keys)";
    }
    std::string type = k->free_form ? "map (free-form)" : k->type.empty() ? "—" : k->type;
    std::string desc = k->doc.empty() ? "" : sentence(k->doc);
    for (const auto& r : k->rules) desc += (desc.empty() ? "" : " ") + rule_sentence(r);
    os << "| `" << markdown_cell(k->path) << "` | " << markdown_cell(type) << " | "
       << markdown_cell(dflt) << " | " << markdown_cell(desc) << " |\n";
  }
  os << "\n";
}

// The Markdown reference; `undocumented` collects keys without a description.
std::string reference(const std::string& dir, std::vector<std::string>* undocumented) {
  std::vector<Schema> ss = schemas();
  std::vector<ConfigKeys> recorded;
  for (const auto& s : ss) recorded.push_back(record(s, dir));
  // Keys every training command reads alike (optimizer, schedule, trainer, dist, ...) once.
  const std::vector<size_t> training{0, 1, 2, 3};
  std::set<std::string> shared;
  for (const auto& [path, k] : recorded[0]) {
    bool all = true;
    for (size_t i : training) {
      auto it = recorded[i].find(path);
      all = all && it != recorded[i].end() && same_spec(it->second, k);
    }
    if (all) shared.insert(path);
  }
  std::set<std::string> seen_undoc;
  // A key without a description is a defect; a section only checked as a whole (a rule on its
  // keys together, e.g. splits summing to 1) has its keys described instead.
  auto note = [&](const ConfigKey& k) {
    const bool section_rule = (k.type.empty() || k.type == "map") && !k.rules.empty();
    if (k.doc.empty() && !section_rule && seen_undoc.insert(k.path).second)
      undocumented->push_back(k.path);
  };

  std::ostringstream os;
  os << "# Configuration reference\n\n"
        "Generated by `evax config --reference > docs/config_reference.md` from the decoders "
        "themselves: each key\nbelow is one a command reads, with the type, default, rules and "
        "description it reads it with.\nDo not edit by hand: a test fails when this file differs "
        "from what the binary generates.\n\n"
        "Configs are YAML; `_base_: [a.yaml, b.yaml]` merges files first (maps merge deeply, "
        "everything else\nreplaces), and `--set key=value` overrides one value on the command "
        "line. Every command rejects a\nkey it does not read, naming the file, line and the "
        "closest valid key; `evax config --config FILE\n--command NAME` prints the value every "
        "key takes and where it came from.\n\n";
  os << "## Shared by the training commands (pretrain, teacher, finetune, segment)\n\n";
  std::vector<const ConfigKey*> rows;
  for (const auto& p : shared) rows.push_back(&recorded[0].at(p)), note(recorded[0].at(p));
  table(os, rows);
  for (size_t i = 0; i < ss.size(); ++i) {
    os << "## " << ss[i].name << "\n\n" << sentence(ss[i].summary);
    const bool trains = std::find(training.begin(), training.end(), i) != training.end();
    if (trains) os << " Also reads every shared key above.";
    os << "\n\n";
    rows.clear();
    for (const auto& [path, k] : recorded[i]) {
      if (trains && shared.count(path)) continue;
      // The demo lists only what it adds to synth and pretrain.
      if (ss[i].name == "demo" && (recorded[0].count(path) || recorded[4].count(path))) continue;
      rows.push_back(&k);
      note(k);
    }
    table(os, rows);
  }
  return os.str();
}

// Everything the command reads (the demo: its stages, synth and pretraining).
std::function<void(Config&)> full_decoder(const Schema& s) {
  if (s.name != "demo") return s.decode;
  return [](Config& c) {
    demo_stage_keys(c);
    synth_options_from_config(c.view("synth"));
    pretrain_plan(c);
  };
}

// One line per key the command reads: its value in `cfg` (or the default) and where it came from.
void effective(Config& cfg, const Schema& s) {
  ConfigKeys keys;
  cfg.record_keys(full_decoder(s), &keys);
  for (const auto& [path, k] : keys) {
    if (k.type.empty() || k.free_form) continue;
    YAML::Node n = cfg.root();
    bool present = true;
    std::stringstream ss(path);
    std::string part;
    while (present && std::getline(ss, part, '.')) {
      YAML::Node next = n.IsMap() ? n[part] : YAML::Node(YAML::NodeType::Undefined);
      present = next.IsDefined() && !next.IsNull();
      n.reset(next);
    }
    std::string value, origin;
    if (present) {
      YAML::Emitter e;
      e << YAML::Flow << n;
      value = e.c_str();
      origin = cfg.origin(path);
    } else {
      value = k.required ? "(missing)" : k.defaults.empty() ? "" : k.defaults.front();
      origin = k.required ? "required" : "default";
    }
    std::cout << path << ": " << value << "    # " << origin << "\n";
  }
}

}  // namespace

int cmd_config(const Args& args) {
  bool ref = false;
  std::string out, check, configs = EVAX_CONFIG_DIR, command;
  RunArgs ra;
  ArgParser p("config",
              "the configuration reference (every key each command reads), or a config's "
              "effective values");
  p.flag("--reference", &ref, "print the Markdown reference of every config key");
  p.option("--out", &out, "FILE", "write the reference to FILE instead of stdout");
  p.option("--check", &check, "FILE",
           "exit 2 when FILE differs from the generated reference or a key has no description");
  p.option("--configs", &configs, "DIR", "the shipped configs the reference explores (configs/)");
  p.option("--config", &ra.config, "FILE", "a config whose effective values to print");
  p.option("--set", &ra.sets, "KEY=VALUE", "override one value of --config");
  p.option("--command", &command, "NAME",
           "the command that reads --config: pretrain, teacher, finetune, segment, synth, demo");
  if (!p.parse(args)) return 0;
  if (!ref && check.empty() && ra.config.empty())
    raise<UsageError>("evax config: give --reference, --check FILE or --config FILE --command NAME");
  if (!ra.config.empty()) {
    const auto all = schemas();
    auto it = std::find_if(all.begin(), all.end(), [&](const Schema& s) { return s.name == command; });
    if (it == all.end())
      raise<UsageError>("evax config: --command must be one of pretrain, teacher, finetune, "
                        "segment, synth, demo (got '", command, "')");
    Config cfg = load_run_config(ra, "");
    // Unknown keys and bad values are reported as the command itself would.
    const auto decode = full_decoder(*it);
    cfg.decode_all([&](Config& c) {
      decode(c);
      return 0;
    });
    effective(cfg, *it);
    return 0;
  }
  std::vector<std::string> undocumented;
  const std::string text = reference(configs, &undocumented);
  if (!check.empty()) {
    const std::string have = fs::exists(check) ? read_file(check) : "";
    std::string problems;
    if (have != text)
      problems += check + " differs from the generated reference: regenerate it with `evax config "
                  "--reference --out " + check + "`\n";
    for (const auto& k : undocumented) problems += "no description for config key `" + k + "`\n";
    if (!problems.empty()) {
      std::cerr << problems;
      return static_cast<int>(ExitCode::kUsage);
    }
    std::cout << check << " is up to date (" << std::count(text.begin(), text.end(), '\n')
              << " lines)\n";
    return 0;
  }
  for (const auto& k : undocumented) std::cerr << "warning: no description for `" << k << "`\n";
  if (out.empty()) {
    std::cout << text;
  } else {
    write_file_atomic(out, text);
    std::cout << "wrote " << out << "\n";
  }
  return 0;
}

}  // namespace evax::app
