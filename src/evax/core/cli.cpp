#include "evax/core/cli.h"

#include <cctype>
#include <iostream>
#include <limits>
#include <sstream>

#include "evax/core/config.h"
#include "evax/core/error.h"

namespace evax {

namespace {
// std::stoll/stod skip leading blanks and take "0x" (stod); an option value is a plain decimal.
bool plain_number(const std::string& v) {
  return !v.empty() && !std::isspace(static_cast<unsigned char>(v[0])) &&
         v.find_first_of("xX") == std::string::npos;
}

template <class A>
A make_arg(const std::string& name, const std::string& metavar, const std::string& help,
           const std::string& default_text) {
  A a;
  a.name = name;
  a.metavar = metavar;
  a.help = help;
  a.default_text = default_text;
  return a;
}
}  // namespace

ArgParser::ArgParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

ArgParser::Arg& ArgParser::add(Arg a) {
  for (const auto& b : args_) EVAX_ASSERT(b.name != a.name, "duplicate option ", a.name);
  args_.push_back(std::move(a));
  return args_.back();
}

void ArgParser::fail(const std::string& msg) const {
  raise<UsageError>("evax ", command_, ": ", msg, " (see `evax ", command_, " --help`)");
}

ArgParser& ArgParser::option(const std::string& name, std::string* out, const std::string& metavar,
                             const std::string& help) {
  Arg a = make_arg<Arg>(name, metavar, help, out->empty() ? "" : *out);
  a.set = [out](const std::string& v) { *out = v; };
  add(std::move(a));
  return *this;
}

ArgParser& ArgParser::option(const std::string& name, int64_t* out, const std::string& metavar,
                             const std::string& help) {
  Arg a = make_arg<Arg>(name, metavar, help, std::to_string(*out));
  a.set = [this, out, name](const std::string& v) {
    size_t used = 0;
    try {
      if (!plain_number(v)) throw std::invalid_argument(v);
      *out = std::stoll(v, &used, 10);
    } catch (const std::exception&) {
      used = std::string::npos;
    }
    if (used != v.size()) fail(name + " expects an integer, got '" + v + "'");
  };
  add(std::move(a));
  return *this;
}

ArgParser& ArgParser::option(const std::string& name, double* out, const std::string& metavar,
                             const std::string& help) {
  std::ostringstream d;
  d << *out;
  Arg a = make_arg<Arg>(name, metavar, help, d.str());
  a.set = [this, out, name](const std::string& v) {
    size_t used = 0;
    try {
      if (!plain_number(v)) throw std::invalid_argument(v);
      *out = std::stod(v, &used);
    } catch (const std::exception&) {
      used = std::string::npos;
    }
    if (used != v.size()) fail(name + " expects a number, got '" + v + "'");
  };
  add(std::move(a));
  return *this;
}

ArgParser& ArgParser::option(const std::string& name, std::vector<std::string>* out,
                             const std::string& metavar, const std::string& help) {
  Arg a = make_arg<Arg>(name, metavar, help, "");
  a.repeatable = true;
  a.set = [out](const std::string& v) { out->push_back(v); };
  add(std::move(a));
  return *this;
}

ArgParser& ArgParser::flag(const std::string& name, bool* out, const std::string& help) {
  Arg a = make_arg<Arg>(name, "", help, "");
  a.is_flag = true;
  a.set = [out](const std::string&) { *out = true; };
  add(std::move(a));
  return *this;
}

ArgParser& ArgParser::positional(const std::string& name, std::string* out,
                                 const std::string& help) {
  Arg a = make_arg<Arg>(name, name, help, "");
  a.is_positional = true;
  a.set = [out](const std::string& v) { *out = v; };
  add(std::move(a));
  return *this;
}

ArgParser& ArgParser::positional(const std::string& name, std::vector<std::string>* out,
                                 const std::string& help) {
  Arg a = make_arg<Arg>(name, name, help, "");
  a.is_positional = true;
  a.repeatable = true;
  a.set = [out](const std::string& v) { out->push_back(v); };
  add(std::move(a));
  return *this;
}

ArgParser& ArgParser::required() {
  EVAX_ASSERT(!args_.empty());
  args_.back().is_required = true;
  return *this;
}

ArgParser& ArgParser::required(const std::string& name) {
  for (auto& a : args_)
    if (a.name == name && !a.is_flag) {
      a.is_required = true;
      return *this;
    }
  EVAX_ASSERT(false, "required(", name, "): no such option");
  return *this;
}

bool ArgParser::parse(const std::vector<std::string>& argv) {
  size_t next_positional = 0;
  std::vector<Arg*> positionals;
  for (auto& a : args_)
    if (a.is_positional) positionals.push_back(&a);
  bool only_positionals = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& tok = argv[i];
    if (!only_positionals && (tok == "--help" || tok == "-h")) {
      std::cout << help();
      return false;
    }
    if (!only_positionals && tok == "--") {
      only_positionals = true;
      continue;
    }
    if (!only_positionals && tok.size() > 1 && tok[0] == '-') {
      std::string name = tok, value;
      bool has_value = false;
      auto eq = tok.find('=');
      if (eq != std::string::npos) {
        name = tok.substr(0, eq);
        value = tok.substr(eq + 1);
        has_value = true;
      }
      Arg* arg = nullptr;
      for (auto& a : args_)
        if (!a.is_positional && a.name == name) arg = &a;
      if (!arg) {
        std::string best;
        size_t best_d = std::numeric_limits<size_t>::max();
        for (const auto& a : args_) {
          if (a.is_positional) continue;
          size_t d = edit_distance(name, a.name);
          if (d < best_d) best_d = d, best = a.name;
        }
        std::string hint = !best.empty() && best_d <= 3 ? " (did you mean " + best + "?)" : "";
        fail("unknown option " + name + hint);
      }
      if (arg->seen && !arg->repeatable) fail(name + " given twice");
      arg->seen = true;
      if (arg->is_flag) {
        if (has_value) fail(name + " takes no value");
        arg->set("");
        continue;
      }
      if (!has_value) {
        if (i + 1 >= argv.size()) fail(name + " needs a value " + arg->metavar);
        value = argv[++i];
      }
      if (arg->is_required && value.empty()) fail(name + " needs a non-empty " + arg->metavar);
      arg->set(value);
      continue;
    }
    if (next_positional >= positionals.size()) fail("unexpected argument '" + tok + "'");
    if (positionals[next_positional]->is_required && tok.empty())
      fail("argument " + positionals[next_positional]->name + " must not be empty");
    positionals[next_positional]->seen = true;
    positionals[next_positional]->set(tok);
    // A repeatable positional (the last) takes every remaining argument.
    if (!positionals[next_positional]->repeatable) ++next_positional;
  }
  for (const auto& a : args_)
    if (a.is_required && !a.seen)
      fail(a.is_positional ? "missing argument " + a.name : "missing required option " + a.name);
  return true;
}

std::string ArgParser::help() const {
  std::ostringstream os;
  os << "usage: evax " << command_;
  for (const auto& a : args_) {
    if (a.is_positional) {
      const std::string n = a.repeatable ? a.name + "..." : a.name;
      os << " " << (a.is_required ? n : "[" + n + "]");
    }
  }
  os << " [options]\n\n" << summary_ << "\n";
  bool any_pos = false;
  for (const auto& a : args_) any_pos |= a.is_positional;
  auto row = [&os](const std::string& left, const std::string& text) {
    os << "  " << left;
    if (left.size() < 24) os << std::string(24 - left.size(), ' ');
    else os << "\n" << std::string(26, ' ');
    os << text << "\n";
  };
  if (any_pos) {
    os << "\narguments:\n";
    for (const auto& a : args_)
      if (a.is_positional) row(a.name, a.help);
  }
  os << "\noptions:\n";
  for (const auto& a : args_) {
    if (a.is_positional) continue;
    std::string left = a.name + (a.is_flag ? "" : " " + a.metavar);
    std::string text = a.help;
    if (a.is_required) text += " (required)";
    else if (a.repeatable) text += " (repeatable)";
    else if (!a.is_flag && !a.default_text.empty()) text += " (default: " + a.default_text + ")";
    row(left, text);
  }
  row("-h, --help", "show this help");
  return os.str();
}

}  // namespace evax
