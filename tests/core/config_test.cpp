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

TEST_CASE("unknown top-level sections are rejected, free-form sections are not") {
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

TEST_CASE("a key repeated in one map is an error naming the file and both lines") {
  std::string e = error_of([] { Config::parse("a: 1\nb:\n  c: 2\n  d: 3\n  c: 4\n", "dup.yaml"); });
  CHECK_THAT(e, Contains("dup.yaml:5") && Contains("duplicate key `b.c`") &&
                    Contains("lines 3 and 5"));
  e = error_of([] { Config::parse("seed: 1\nmodel: {name: x}\nseed: 2\n", "top.yaml"); });
  CHECK_THAT(e, Contains("top.yaml:3") && Contains("`seed`") && Contains("lines 1 and 3"));
  e = error_of([] { Config::parse("d: {x: 1, x: 2}\n", "flow.yaml"); });
  CHECK_THAT(e, Contains("flow.yaml:1") && Contains("`d.x`") && Contains("columns"));
  e = error_of([] { Config::parse("l:\n  - {k: 1, k: 2}\n", "seq.yaml"); });
  CHECK_THAT(e, Contains("`l[0].k`"));
  CHECK_THROWS_AS(Config::parse("a: 1\na: 1\n", "same.yaml"), ConfigError);
  // The same key in different maps, and --set over a file value, are fine.
  Config c = Config::parse("a: {k: 1}\nb: {k: 2}\n", "ok.yaml");
  c.apply_override("a.k=3");
  c.apply_override("a.k=4");
  CHECK(c.get<int>("a.k", 0) == 4);
}

TEST_CASE("integers are decimal, malformed ones name the path") {
  Config c = Config::parse("a: 010\nb: -007\nc: 0x10\nd: 1e3\ne: '+5'\nf: 08\n", "int.yaml");
  CHECK(c.get<int64_t>("a", 0) == 10);
  CHECK(c.get<int>("b", 0) == -7);
  CHECK(c.get<int>("e", 0) == 5);
  CHECK(c.get<int>("f", 0) == 8);
  CHECK_THAT(error_of([&] { c.get<int64_t>("c", 0); }),
             Contains("int.yaml:3") && Contains("`c`") && Contains("an integer") &&
                 Contains("'0x10'"));
  CHECK_THAT(error_of([&] { c.get<int>("d", 0); }), Contains("`d`") && Contains("'1e3'"));
  c.apply_override("g=012");
  CHECK(c.get<int>("g", 0) == 12);
  c.apply_override("h=' 5'");
  CHECK_THAT(error_of([&] { c.get<int>("h", 0); }), Contains("`h`"));
  c.apply_override("x=0x1p3");
  CHECK_THAT(error_of([&] { c.get<double>("x", 0); }), Contains("a number"));
  c.apply_override("y=1.5e-3");
  CHECK(c.get<double>("y", 0) == Approx(1.5e-3));
}

TEST_CASE("a required string must not be empty") {
  Config c = Config::parse("data:\n  manifest: ''\n  split: train\n", "req.yaml");
  CHECK_THAT(error_of([&] { c.require<std::string>("data.manifest"); }),
             Contains("req.yaml:2") && Contains("`data.manifest` is empty"));
  CHECK(c.require<std::string>("data.split") == "train");
  c.apply_override("data.manifest=");  // --set k=: missing or empty, an error either way
  CHECK_THAT(error_of([&] { c.require<std::string>("data.manifest"); }),
             Contains("`data.manifest`"));
  CHECK_THROWS_AS(c.require<std::string>("data.manifest"), ConfigError);
}

namespace {
struct Target {
  std::string kind, checkpoint;
  int64_t depth = 0;
};
Target decode_target(Config& c) {
  Target t;
  auto v = c.view("target");
  t.kind = v.get<std::string>("kind", "pixels");
  t.checkpoint = v.get<std::string>("checkpoint", "");
  v.check("checkpoint", t.kind != "teacher" || !t.checkpoint.empty(),
          "target kind teacher needs a teacher checkpoint");
  t.depth = v.get<int64_t>("depth", 0);
  v.check("depth", t.depth >= 0, "must be >= 0");
  return t;
}
}  // namespace

TEST_CASE("decode_all reports unknown keys before any value error") {
  Config c = Config::parse("target:\n  kind: teacher\n", "t.yaml");
  c.apply_override("target.checkpont=t.ckpt");
  c.apply_override("target.depth=-1");
  std::string e = error_of([&] { c.decode_all(decode_target); });
  CHECK_THAT(e, Contains("unknown key `target.checkpont`") &&
                    Contains("did you mean `target.checkpoint`"));
  // Wrong types and missing required keys wait for the unknown keys too (here the decoder stops
  // at the first check, before it asked for target.depth or data.manifest).
  Config d = Config::parse("target: {kind: teacher, depth: abc}\nzzz: 1\n", "d.yaml");
  e = error_of([&] {
    d.decode_all([](Config& x) {
      decode_target(x);
      return x.require<std::string>("data.manifest");
    });
  });
  CHECK_THAT(e, Contains("unknown key `zzz`"));
}

TEST_CASE("decode_all raises the first value error once the keys are valid") {
  Config c = Config::parse("target: {kind: teacher, depth: -1}\n", "t.yaml");
  std::string e = error_of([&] { c.decode_all(decode_target); });
  CHECK_THAT(e, Contains("needs a teacher checkpoint"));  // first in decoding order
  CHECK_THROWS_AS(c.decode_all(decode_target), ConfigError);
  Config d = Config::parse("target: {kind: pixels, depth: abc}\n", "d.yaml");
  CHECK_THAT(error_of([&] { d.decode_all(decode_target); }),
             Contains("`target.depth`") && Contains("an integer"));
  // Any evax error the decoder throws waits for the unknown keys; its own error comes next.
  auto throws_early = [](Config& x) -> int {
    x.get<std::string>("target.kind", "");
    if (x.has("target.kind")) throw evax::DataError("downstream");
    x.get<int64_t>("target.depth", 0);
    return 0;
  };
  Config f = Config::parse("target: {kind: teacher, deptj: 1}\n", "f.yaml");
  CHECK_THAT(error_of([&] { f.decode_all(throws_early); }),
             Contains("unknown key `target.deptj`") && Contains("did you mean `target.depth`"));
  Config f2 = Config::parse("target: {kind: teacher, depth: 1}\n", "f2.yaml");
  CHECK_THROWS_AS(f2.decode_all(throws_early), evax::DataError);
  // Valid: the result comes back and the config stays strict.
  Config g = Config::parse("target: {kind: teacher, checkpoint: t.ckpt, depth: 2}\n", "g.yaml");
  Target t = g.decode_all(decode_target);
  CHECK(t.checkpoint == "t.ckpt");
  CHECK(t.depth == 2);
  CHECK_THROWS_AS(g.check("target.depth", false, "x"), ConfigError);
  CHECK_THROWS_AS(g.require<std::string>("target.none"), ConfigError);
  Config h = Config::parse("target: {kind: pixels}\nextra: 1\n", "h.yaml");
  CHECK_THAT(error_of([&] { h.decode_all(decode_target); }), Contains("unknown key `extra`"));
}

TEST_CASE("record_keys collects each key's type, defaults, required flag, rules and description") {
  // A decoder with a branch: `mode: b` reads one more key, with another default for `x`.
  auto decode = [](Config& c) {
    const std::string mode = c.get<std::string>("mode", "a", "which branch");
    c.check("mode", mode == "a" || mode == "b", "must be a or b");
    const double x = c.get<double>("x", mode == "a" ? 0.5 : 2.0, "a number");
    c.check("x", x > 0, "must be > 0");
    c.require<std::string>("path", "a file");
    c.get<std::vector<int64_t>>("sizes", {16, 32});
    c.mark_known("extra", "free-form settings");
    if (mode == "b") c.get<bool>("b.flag", true, "only in mode b");
    return 0;
  };
  evax::ConfigKeys keys;
  Config().record_keys(decode, &keys);  // the defaults: no throw for the missing required key
  REQUIRE(keys.size() == 5);
  CHECK(keys.at("mode").type == "string");
  CHECK(keys.at("mode").defaults == std::vector<std::string>{"a"});
  CHECK(keys.at("mode").rules == std::vector<std::string>{"must be a or b"});
  CHECK(keys.at("mode").doc == "which branch");
  CHECK(keys.at("x").type == "float");
  CHECK(keys.at("x").defaults == std::vector<std::string>{"0.5"});
  CHECK(keys.at("path").required);
  CHECK(keys.at("path").defaults.empty());
  CHECK(keys.at("sizes").type == "list of int");
  CHECK(keys.at("sizes").defaults == std::vector<std::string>{"[16, 32]"});
  CHECK(keys.at("sizes").doc.empty());
  CHECK(keys.at("extra").free_form);
  // A config that takes the other branch adds its key and the other default; a failed check on it
  // (x = -1) does not stop the recording.
  Config::parse("mode: b\nx: -1\n", "t.yaml").record_keys(decode, &keys);
  CHECK(keys.at("b.flag").type == "bool");
  CHECK(keys.at("b.flag").defaults == std::vector<std::string>{"true"});
  CHECK(keys.at("x").defaults == std::vector<std::string>{"0.5", "2.0"});
  // Recording leaves the config itself untouched: its unknown keys are still rejected.
  Config c = Config::parse("mode: a\nwhat: 1\npath: p\n", "t.yaml");
  c.record_keys(decode, &keys);
  CHECK_THAT(error_of([&] { c.decode_all(decode); }), Contains("unknown key `what`"));
}

TEST_CASE("defaults are recorded as YAML text that reads back to the same value") {
  using evax::config_detail::yaml_text;
  CHECK(yaml_text(1.5e-3) == "0.0015");
  CHECK(yaml_text(0.1) == "0.1");
  CHECK(yaml_text(3.0) == "3.0");
  CHECK(yaml_text(1e-12) == "1e-12");
  CHECK(yaml_text(std::string("")) == "\"\"");
  CHECK(yaml_text(std::string("cosine")) == "cosine");
  CHECK(yaml_text(std::string("true")) == "\"true\"");
  CHECK(yaml_text(std::string("1e3")) == "\"1e3\"");
  CHECK(yaml_text(std::string("a: b")) == "\"a: b\"");
  for (double v : {0.1, 1.0 / 3.0, 6e-5, 0.999, 224.0}) {
    double back = 0;
    REQUIRE(YAML::convert<double>::decode(YAML::Load(yaml_text(v)), back));
    CHECK(back == v);
  }
}
