// The documentation cannot drift from the binary: the config reference is regenerated and compared,
// and every evax command line in the README and docs/ names a command, flags and config keys that
// exist, every config file it names exists and every relative link resolves.
#include <catch2/catch.hpp>

#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "cli_util.h"
#include "evax/core/files.h"
#include "test_util.h"

using namespace evax::test;
namespace fs = std::filesystem;

namespace {

struct Out {
  int code;
  std::string text;
};

Out evax_run(const std::string& args) {
  TempDir tmp("docs");
  const int code = shell("'" + evax_bin() + "' " + args + " >'" + (tmp / "out") + "' 2>&1");
  return {code, evax::read_file(tmp / "out")};
}

std::vector<std::string> doc_files() {
  std::vector<std::string> files{"README.md"};
  for (const auto& e : fs::directory_iterator(source_path("docs")))
    if (e.path().extension() == ".md") files.push_back("docs/" + e.path().filename().string());
  std::sort(files.begin(), files.end());
  return files;
}

// The code in a Markdown text: fenced blocks (backslash continuations joined) and inline spans.
std::vector<std::string> code_of(const std::string& md) {
  std::vector<std::string> out;
  std::istringstream in(md);
  bool fenced = false;
  std::string line, joined;
  while (std::getline(in, line)) {
    if (line.rfind("```", 0) == 0) {
      fenced = !fenced;
      continue;
    }
    if (fenced) {
      if (!line.empty() && line.back() == '\\') {
        joined += line.substr(0, line.size() - 1) + " ";
        continue;
      }
      out.push_back(joined + line);
      joined.clear();
      continue;
    }
    static const std::regex span("`([^`]+)`");
    for (std::sregex_iterator it(line.begin(), line.end(), span), end; it != end; ++it)
      out.push_back((*it)[1].str());
  }
  return out;
}

// "evax <command> args..." invocations in a line of code; `launch ... -- <command>` gives both.
std::vector<std::vector<std::string>> invocations(const std::string& code) {
  std::vector<std::vector<std::string>> out;
  static const std::regex start("(^|[\\s/(])evax ([a-z][a-z0-9-]*)");
  for (std::sregex_iterator it(code.begin(), code.end(), start), end; it != end; ++it) {
    std::istringstream rest(code.substr(static_cast<size_t>(it->position(2))));
    std::vector<std::string> tokens;
    for (std::string t; rest >> t;) {
      if (t == "&&" || t == ";" || t == ">" || t == "2>&1" || t == "#") break;
      if (t == "--" && !tokens.empty() && tokens[0] == "launch") {  // the ranks' command follows
        out.push_back(tokens);
        tokens.clear();
        continue;
      }
      tokens.push_back(t);
    }
    if (!tokens.empty()) out.push_back(tokens);
  }
  return out;
}

}  // namespace

TEST_CASE("docs: config_reference.md equals what `evax config --reference` generates, every key described") {
  const Out r = evax_run("config --check '" + source_path("docs/config_reference.md") + "'");
  INFO(r.text);
  CHECK(r.code == 0);
}

TEST_CASE("docs: the config reference lists the keys the decoders read, with their defaults and rules") {
  const Out r = evax_run("config --reference");
  REQUIRE(r.code == 0);
  // A default, a rule from check() and a required key, from three different decoders.
  CHECK_THAT(r.text, Catch::Matchers::Contains("| `optimizer.lr` | float |"));
  CHECK_THAT(r.text, Catch::Matchers::Contains("| `synth.size` | int | `256` |"));
  CHECK_THAT(r.text, Catch::Matchers::Contains("Value must be a multiple of 16 and >= 64."));
  CHECK(std::regex_search(r.text, std::regex("\\| `data\\.manifest` \\| string \\| \\*\\*required\\*\\*")));
  // Each command has its section; the shared training keys are listed once.
  for (const char* s : {"## pretrain", "## teacher", "## finetune", "## segment", "## synth", "## demo"})
    CHECK_THAT(r.text, Catch::Matchers::Contains(s));
  auto count = [&](const std::string& row) {
    size_t n = 0;
    for (size_t p = r.text.find(row); p != std::string::npos; p = r.text.find(row, p + 1)) ++n;
    return n;
  };
  CHECK(count("| `train.epochs` |") == 1);
  // A key whose default differs between commands is listed under each: lr 1.5e-3 pretraining,
  // 1e-3 finetuning, 6e-5 segmentation.
  CHECK(count("| `optimizer.lr` |") == 4);
  CHECK_THAT(r.text, Catch::Matchers::Contains("| `optimizer.lr` | float | `6e-05` |"));
}

TEST_CASE("docs: `evax config --config` prints every key's value and origin, and rejects bad configs") {
  const Out r = evax_run("config --config '" + source_path("configs/classify/cxr14_eva_x_s.yaml") +
                         "' --command finetune --set optimizer.lr=0.5 --set data.manifest=m.csv");
  INFO(r.text);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.text, Catch::Matchers::Contains("optimizer.lr: 0.5    # --set optimizer.lr=0.5"));
  CHECK(std::regex_search(r.text, std::regex("model\\.name: eva_x_small_patch16    # .*cxr14_eva_x_s\\.yaml:\\d+")));
  CHECK(std::regex_search(r.text, std::regex("\\n[a-z_.]+: [^\\n]*    # default\\n")));
  const Out bad = evax_run("config --config '" + source_path("configs/classify/cxr14_eva_x_s.yaml") +
                           "' --command finetune --set optimizer.lrr=1 --set data.manifest=m.csv");
  CHECK(bad.code == 2);
  CHECK_THAT(bad.text, Catch::Matchers::Contains("did you mean `optimizer.lr`"));
  CHECK(evax_run("config --config x.yaml --command nope").code == 2);
}

TEST_CASE("docs: every evax command line in README.md and docs/ uses commands, flags and keys that exist") {
  const std::string reference = evax::read_file(source_path("docs/config_reference.md"));
  std::map<std::string, std::string> helps;  // "command [dataset]" -> --help text
  auto help = [&](const std::string& what) -> const std::string& {
    auto it = helps.find(what);
    if (it == helps.end()) it = helps.emplace(what, evax_run(what + " --help").text).first;
    return it->second;
  };
  const std::set<std::string> placeholders{"k", "a.b.c", "key", "KEY", "k=v"};
  std::map<std::string, bool> commands;  // command -> its --help succeeds
  size_t lines = 0, flags = 0, keys = 0;
  for (const auto& file : doc_files()) {
    for (const auto& code : code_of(evax::read_file(source_path(file)))) {
      for (const auto& inv : invocations(code)) {
        const std::string& cmd = inv[0];
        if (!std::regex_match(cmd, std::regex("[a-z][a-z0-9-]*"))) continue;  // `-- <command>`
        INFO(file << ": evax " << code);
        if (!commands.count(cmd)) commands[cmd] = evax_run(cmd + " --help").code == 0;
        if (!commands[cmd]) FAIL("`evax " << cmd << "` is not a command");
        ++lines;
        std::string context = cmd;
        // `evax manifest <dataset>`: that dataset's own flags.
        if (cmd == "manifest" && inv.size() > 1)
          context = "manifest " + (std::regex_match(inv[1], std::regex("[a-z0-9-]+"))
                                       ? inv[1]
                                       : std::string("cxr14"));  // `<dataset>`: the common flags
        const std::string& text = help(context);
        for (size_t i = 1; i < inv.size(); ++i) {
          static const std::regex flag("^[\\[(]*(--[a-z0-9][a-z0-9-]*)");
          std::smatch m;
          std::string tok = inv[i];
          if (!std::regex_search(tok, m, flag)) continue;
          const std::string name = m[1].str();
          ++flags;
          CHECK(std::regex_search(text, std::regex("(^|[\\s,\\[])" + name + "([\\s=,\\]]|$)")));
          if (name == "--set" && i + 1 < inv.size()) {
            const std::string kv = inv[i + 1];
            const std::string key = kv.substr(0, kv.find('='));
            if (placeholders.count(key) || key.find('<') != std::string::npos) continue;
            ++keys;
            INFO("config key " << key);
            CHECK_THAT(reference, Catch::Matchers::Contains("| `" + key + "` |"));
          }
        }
      }
    }
  }
  INFO(lines << " command lines, " << flags << " flags, " << keys << " config keys");
  CHECK(lines >= 40);
  CHECK(keys >= 10);
}

TEST_CASE("docs: the files and links README.md and docs/ name exist") {
  static const std::regex file_ref(
      "((configs|tools|bench|docker|data_manifests|docs)/[A-Za-z0-9_./-]+\\.(yaml|sh|py|md|txt|sbatch|def|cpp))");
  static const std::regex link("\\]\\(([^)#:]+)(#[^)]*)?\\)");
  size_t checked = 0;
  for (const auto& file : doc_files()) {
    const std::string text = evax::read_file(source_path(file));
    INFO(file);
    for (std::sregex_iterator it(text.begin(), text.end(), file_ref), end; it != end; ++it) {
      const std::string rel = (*it)[1].str();
      INFO(rel);
      ++checked;
      CHECK(fs::exists(source_path(rel)));
    }
    const fs::path dir = fs::path(source_path(file)).parent_path();
    for (std::sregex_iterator it(text.begin(), text.end(), link), end; it != end; ++it) {
      const std::string target = (*it)[1].str();
      INFO("link " << target);
      ++checked;
      CHECK(fs::exists(dir / target));
    }
  }
  CHECK(checked >= 30);
}
