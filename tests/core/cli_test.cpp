#include <catch2/catch.hpp>

#include "evax/core/cli.h"
#include "evax/core/error.h"

using evax::ArgParser;
using evax::UsageError;
using Catch::Matchers::Contains;

namespace {
struct Opts {
  std::string out, ckpt;
  int64_t n = 2000;
  double lr = 0.5;
  bool voi = false;
  std::vector<std::string> sets;
};

ArgParser make(Opts& o) {
  ArgParser p("thing", "Does a thing.");
  p.positional("CKPT", &o.ckpt, "checkpoint file").required();
  p.option("--out", &o.out, "DIR", "output directory").required();
  p.option("--n", &o.n, "N", "count");
  p.option("--lr", &o.lr, "LR", "learning rate");
  p.option("--set", &o.sets, "K=V", "override");
  p.flag("--voi", &o.voi, "apply VOI");
  return p;
}

std::string usage_error(std::vector<std::string> args) {
  Opts o;
  auto p = make(o);
  try {
    p.parse(args);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "<no error>";
}
}  // namespace

TEST_CASE("typed options, flags, repeatable options and positionals parse") {
  Opts o;
  auto p = make(o);
  REQUIRE(p.parse({"a.pt", "--out", "d", "--n=12", "--lr", "1e-3", "--voi", "--set", "a=1",
                   "--set=b=2"}));
  CHECK(o.ckpt == "a.pt");
  CHECK(o.out == "d");
  CHECK(o.n == 12);
  CHECK(o.lr == Approx(1e-3));
  CHECK(o.voi);
  CHECK(o.sets == std::vector<std::string>{"a=1", "b=2"});
}

TEST_CASE("defaults stay when options are absent, -- ends options") {
  Opts o;
  auto p = make(o);
  REQUIRE(p.parse({"--out", "d", "--", "--weird-name.pt"}));
  CHECK(o.ckpt == "--weird-name.pt");
  CHECK(o.n == 2000);
  CHECK_FALSE(o.voi);
}

TEST_CASE("usage errors are clear") {
  CHECK_THAT(usage_error({"a.pt"}), Contains("missing required option --out"));
  CHECK_THAT(usage_error({"--out", "d"}), Contains("missing argument CKPT"));
  CHECK_THAT(usage_error({"a.pt", "--out", "d", "--n", "x"}), Contains("--n expects an integer"));
  CHECK_THAT(usage_error({"a.pt", "--out", "d", "--n", "5x"}), Contains("'5x'"));
  CHECK_THAT(usage_error({"a.pt", "--out", "d", "--lr", "fast"}), Contains("--lr expects a number"));
  CHECK_THAT(usage_error({"a.pt", "--out"}), Contains("--out needs a value DIR"));
  CHECK_THAT(usage_error({"a.pt", "--out", "d", "--outt", "e"}),
             Contains("unknown option --outt") && Contains("did you mean --out"));
  CHECK_THAT(usage_error({"a.pt", "b.pt", "--out", "d"}), Contains("unexpected argument 'b.pt'"));
  CHECK_THAT(usage_error({"a.pt", "--out", "d", "--out", "e"}), Contains("given twice"));
  CHECK_THAT(usage_error({"a.pt", "--out", "d", "--voi=1"}), Contains("takes no value"));
  CHECK_THAT(usage_error({"x"}), Contains("evax thing --help"));
}

TEST_CASE("--help returns false and the text lists every option") {
  Opts o;
  auto p = make(o);
  CHECK_FALSE(p.parse({"--help"}));
  std::string h = p.help();
  for (const char* s : {"usage: evax thing CKPT", "--out DIR", "(required)", "--n N",
                        "(default: 2000)", "--voi", "(repeatable)", "Does a thing."})
    CHECK_THAT(h, Contains(s));
}

TEST_CASE("numbers are plain decimals, blanks and hex are rejected") {
  Opts o;
  auto p = make(o);
  REQUIRE(p.parse({"a.pt", "--out", "d", "--n", "010", "--lr", "-2.5e-1"}));
  CHECK(o.n == 10);
  CHECK(o.lr == Approx(-0.25));
  CHECK_THAT(usage_error({"a.pt", "--out", "d", "--n", " 5"}), Contains("--n expects an integer"));
  CHECK_THAT(usage_error({"a.pt", "--out", "d", "--n", "0x10"}), Contains("'0x10'"));
  CHECK_THAT(usage_error({"a.pt", "--out", "d", "--lr", " 1"}), Contains("--lr expects a number"));
  CHECK_THAT(usage_error({"a.pt", "--out", "d", "--lr", "0x1p3"}), Contains("--lr expects a number"));
}

TEST_CASE("a required option can be named after its declaration, empty counts as missing") {
  std::string config;
  int64_t steps = 0;
  auto make_p = [&] {
    ArgParser p("run", "Runs.");
    p.option("--config", &config, "FILE", "config");
    p.option("--steps", &steps, "N", "steps");
    p.required("--config");
    return p;
  };
  auto err = [&](std::vector<std::string> args) {
    try {
      make_p().parse(args);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  CHECK_THAT(err({"--steps", "3"}), Contains("missing required option --config"));
  CHECK_THAT(err({"--config", ""}), Contains("--config needs a non-empty FILE"));
  CHECK_THAT(err({"--config="}), Contains("--config needs a non-empty FILE"));
  CHECK(err({"--config", "a.yaml"}) == "<no error>");
  CHECK_THAT(make_p().help(), Contains("(required)"));
  CHECK_THAT(usage_error({"", "--out", "d"}), Contains("CKPT must not be empty"));
  CHECK_THAT(usage_error({"a.pt", "--out", ""}), Contains("--out needs a non-empty DIR"));
}
