// Command-line parsing for `evax <command>`: typed options, `--help` text generated from the
// declarations, and UsageError (exit code 2) with a suggestion for unknown flags.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace evax {

/// Declares and parses one command's arguments.
///
/// Example:
///   ArgParser p("synth", "Generate synthetic chest X-rays");
///   p.option("--out", &out, "DIR", "output directory").required();
///   if (!p.parse(args)) return 0;  // --help was printed
class ArgParser {
 public:
  ArgParser(std::string command, std::string summary);

  ArgParser& option(const std::string& name, std::string* out, const std::string& metavar,
                    const std::string& help);
  ArgParser& option(const std::string& name, int64_t* out, const std::string& metavar,
                    const std::string& help);
  ArgParser& option(const std::string& name, double* out, const std::string& metavar,
                    const std::string& help);
  /// A repeatable option; every occurrence is appended.
  ArgParser& option(const std::string& name, std::vector<std::string>* out,
                    const std::string& metavar, const std::string& help);
  ArgParser& flag(const std::string& name, bool* out, const std::string& help);
  ArgParser& positional(const std::string& name, std::string* out, const std::string& help);
  /// A positional taking every remaining argument (declare it last).
  ArgParser& positional(const std::string& name, std::vector<std::string>* out,
                        const std::string& help);
  /// Makes the last declared option or positional mandatory (an empty value counts as missing).
  ArgParser& required();
  /// Makes the named, already declared option mandatory (e.g. one a shared helper declared).
  ArgParser& required(const std::string& name);

  /// Parses `args` (without the program and command names). Returns false when --help was
  /// printed to stdout. Throws UsageError on bad input.
  bool parse(const std::vector<std::string>& args);
  std::string help() const;

 private:
  struct Arg {
    std::string name, metavar, help, default_text;
    bool is_flag = false, is_positional = false, is_required = false, repeatable = false;
    bool seen = false;
    std::function<void(const std::string&)> set;
  };
  Arg& add(Arg a);
  [[noreturn]] void fail(const std::string& msg) const;

  std::string command_, summary_;
  std::vector<Arg> args_;
};

}  // namespace evax
