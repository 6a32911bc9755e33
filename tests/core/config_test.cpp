#include <catch2/catch.hpp>

#include "evax/core/config.h"
#include "test_util.h"

using evax::Config;
using evax::ConfigError;
using evax::test::source_path;
using Catch::Matchers::Contains;

namespace {
std::string fixture(const std::string& name) { return source_path("tests/fixtures/configs/" + name); }

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const evax::Error& e) {
    return e.what();
  }
  return "<no error>";
}
}  // namespace

TEST_CASE("_base_ files merge in order, then the file itself, maps deep-merge") {
  Config c = Config::load(fixture("child.yaml"));
  CHECK(c.name() == "child");
  CHECK(c.get<std::string>("model.name", "") == "eva_x_small_patch16");
  CHECK(c.get<double>("model.drop_path", 0) == Approx(0.2));    // child over base_a
  CHECK(c.get<double>("optimizer.lr", 0) == Approx(2.0e-3));    // base_b over base_a
  CHECK(c.get<double>("optimizer.weight_decay", 0) == Approx(0.05));
  CHECK(c.get<std::vector<double>>("optimizer.betas", {}) == std::vector<double>{0.9, 0.999});
  CHECK(c.get<int64_t>("data.size", 0) == 224);
  CHECK(c.get<bool>("data.flip", false));
  CHECK(c.get<int64_t>("data.absent", 7) == 7);
  CHECK_NOTHROW(c.reject_unknown());
}

TEST_CASE("origins point at the file and line that set a value") {
  Config c = Config::load(fixture("child.yaml"));
  CHECK_THAT(c.origin("model.drop_path"), Contains("child.yaml:3"));
  CHECK_THAT(c.origin("optimizer.lr"), Contains("base_b.yaml:2"));
  CHECK_THAT(c.origin("model.name"), Contains("base_a.yaml:2"));
}

TEST_CASE("overrides (--set) are typed and recorded") {
  Config c = Config::load(fixture("child.yaml"));
  c.apply_override("optimizer.lr=5e-4");
  c.apply_override("data.flip=false");
  c.apply_override("optimizer.betas=[0.8, 0.95]");
  c.apply_override("model.name=eva_x_base_patch16");
  c.apply_override("new.deep.key=3");
  CHECK(c.get<double>("optimizer.lr", 0) == Approx(5e-4));
  CHECK_FALSE(c.get<bool>("data.flip", true));
  CHECK(c.get<std::vector<double>>("optimizer.betas", {}) == std::vector<double>{0.8, 0.95});
  CHECK(c.get<std::string>("model.name", "") == "eva_x_base_patch16");
  CHECK(c.get<int>("new.deep.key", 0) == 3);
  CHECK_THAT(c.origin("optimizer.lr"), Contains("--set optimizer.lr=5e-4"));
  CHECK_THROWS_AS(c.apply_override("novalue"), evax::UsageError);
  CHECK_THROWS_AS(c.apply_override("a..b=1"), evax::UsageError);
}

TEST_CASE("wrong types name the file, line, path and value") {
  Config c = Config::load(fixture("child.yaml"));
  std::string e = error_of([&] { c.get<double>("model.name", 0.0); });
  CHECK_THAT(e, Contains("base_a.yaml:2") && Contains("`model.name`") && Contains("a number") &&
                    Contains("eva_x_small_patch16"));
  e = error_of([&] { c.get<int64_t>("optimizer.lr", 0); });
  CHECK_THAT(e, Contains("an integer"));
  e = error_of([&] { c.get<bool>("data.size", false); });
  CHECK_THAT(e, Contains("boolean"));
  e = error_of([&] { c.get<std::vector<double>>("data.size", {}); });
  CHECK_THAT(e, Contains("a list of a number"));
  c.apply_override("optimizer.betas=[0.9, x]");
  e = error_of([&] { c.get<std::vector<double>>("optimizer.betas", {}); });
  CHECK_THAT(e, Contains("`optimizer.betas[1]`") && Contains("'x'"));
  c.apply_override("data.size=99999999999");
  CHECK_THAT(error_of([&] { c.get<int>("data.size", 0); }), Contains("an integer"));
}

TEST_CASE("out-of-range values are reported with their origin") {
  Config c = Config::load(fixture("child.yaml"));
  c.apply_override("optimizer.lr=-1");
  double lr = c.get<double>("optimizer.lr", 0);
  std::string e = error_of([&] { c.check("optimizer.lr", lr > 0, "must be > 0"); });
  CHECK_THAT(e, Contains("--set optimizer.lr=-1") && Contains("= -1") && Contains("must be > 0"));
  CHECK_THROWS_AS(c.check("optimizer.lr", false, "x"), ConfigError);
}

TEST_CASE("missing required keys are errors") {
  Config c = Config::load(fixture("child.yaml"));
  CHECK(c.require<int64_t>("data.size") == 224);
  CHECK_THAT(error_of([&] { c.require<int64_t>("data.batch"); }), Contains("`data.batch`"));
}

TEST_CASE("unknown keys are rejected with the closest valid key") {
  Config c = Config::load(fixture("child.yaml"));
  c.apply_override("optimizer.lrr=1");
  auto v = c.view("optimizer");
  v.get<double>("lr", 0);
  v.get<double>("weight_decay", 0);
  v.get<std::vector<double>>("betas", {});
  c.get<std::string>("model.name", "");
  c.get<double>("model.drop_path", 0);
  c.get<int64_t>("data.size", 0);
  c.get<bool>("data.flip", false);
  std::string e = error_of([&] { c.reject_unknown(); });
  CHECK_THAT(e, Contains("unknown key `optimizer.lrr`") && Contains("did you mean `optimizer.lr`") &&
                    Contains("--set"));
}

TEST_CASE("unknown keys far from any valid key list the valid ones") {
  Config c = Config::parse("model:\n  name: x\n  zzzzzzzz: 1\n", "inline.yaml");
  c.get<std::string>("model.name", "");
  std::string e = error_of([&] { c.reject_unknown(); });
  CHECK_THAT(e, Contains("inline.yaml:3") && Contains("`model.zzzzzzzz`") &&
                    Contains("valid keys here: name"));
}

TEST_CASE("unknown top-level sections are rejected; free-form sections are not") {
  Config c = Config::parse("model: {name: x}\nextra: {a: 1}\nnotes: {anything: 1}\n", "t.yaml");
  c.get<std::string>("model.name", "");
  c.mark_known("notes");
  CHECK_THAT(error_of([&] { c.reject_unknown(); }), Contains("unknown key `extra`"));
}

TEST_CASE("file errors: missing file, missing base, cycles, YAML syntax, non-map") {
  CHECK_THAT(error_of([] { Config::load(fixture("nope.yaml")); }),
             Contains("cannot read config file") && Contains("nope.yaml"));
  CHECK_THAT(error_of([] { Config::load(fixture("missing_base.yaml")); }),
             Contains("does_not_exist.yaml") && Contains("included from"));
  CHECK_THAT(error_of([] { Config::load(fixture("cycle_a.yaml")); }), Contains("cycle"));
  CHECK_THAT(error_of([] { Config::load(fixture("bad_syntax.yaml")); }),
             Contains("bad_syntax.yaml:") && Contains("YAML syntax error"));
  CHECK_THAT(error_of([] { Config::parse("- 1\n- 2\n", "list.yaml"); }), Contains("must be a map"));
  CHECK_THAT(error_of([] { Config::parse("_base_: {a: 1}\n", "b.yaml"); }),
             Contains("`_base_` must be"));
  CHECK_THROWS_AS(Config::load(fixture("cycle_a.yaml")), ConfigError);
}

TEST_CASE("dump round-trips the resolved tree") {
  Config c = Config::load(fixture("child.yaml"));
  c.apply_override("optimizer.lr=0.25");
  Config d = Config::parse(c.dump(), "dumped.yaml");
  CHECK(d.get<double>("optimizer.lr", 0) == Approx(0.25));
  CHECK(d.get<double>("model.drop_path", 0) == Approx(0.2));
  CHECK(d.get<std::vector<double>>("optimizer.betas", {}) == std::vector<double>{0.9, 0.999});
  CHECK(d.dump() == c.dump());
}

TEST_CASE("edit distance") {
  CHECK(evax::edit_distance("lr", "lr") == 0);
  CHECK(evax::edit_distance("lrr", "lr") == 1);
  CHECK(evax::edit_distance("kitten", "sitting") == 3);
  CHECK(evax::edit_distance("", "abc") == 3);
}
