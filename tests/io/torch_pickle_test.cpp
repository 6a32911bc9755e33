// The tolerant unpickler on pickles made by CPython (protocols 2, 4, 5) and on malformed input.
#include "evax/io/torch_pickle.h"

#include <catch2/catch.hpp>
#include <string>

#include "evax/core/error.h"

using Catch::Matchers::Contains;
using evax::PickleValue;
using Kind = PickleValue::Kind;
using namespace std::string_literals;

namespace {

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// pickle.dumps(obj, protocol=p) by CPython 3.11 for
//   shared = [1, 2]
//   obj = {'i': [0, 1, 255, 256, 65535, 65536, -1, -2**31, 2**31, 2**63-1, -2**63, 2**63, 2**64],
//          'f': -1.5, 's': 'h\u00e9llo \u2713', 'b': b'\x00\xff', 't': (1, (2, 3), []),
//          'set': {1}, 'fs': frozenset([2]), 'n': None, 'T': True, 'F': False,
//          'od': OrderedDict(a=1), 1: 'intkey', (1, 2): 'tuplekey', 's1': shared, 's2': shared}
const char* kProto2 =
    "80027d71002858010000006971015d7102284b004b014bff4d00014dffff4a000001004affffffff4a00000080"
    "8a0500000080008a08ffffffffffffff7f8a0800000000000000808a090000000000000080008a090000000000"
    "0000000165580100000066710347bff80000000000005801000000737104580a00000068c3a96c6c6f20e29c93"
    "71055801000000627106635f636f646563730a656e636f64650a7107580300000000c3bf710858060000006c61"
    "74696e31710986710a52710b580100000074710c4b014b024b0386710d5d710e87710f58030000007365747110"
    "635f5f6275696c74696e5f5f0a7365740a71115d71124b0161857113527114580200000066737115635f5f6275"
    "696c74696e5f5f0a66726f7a656e7365740a71165d71174b026185711852711958010000006e711a4e58010000"
    "0054711b88580100000046711c8958020000006f64711d63636f6c6c656374696f6e730a4f7264657265644469"
    "63740a711e2952711f58010000006171204b01734b015806000000696e746b657971214b014b02867122580800"
    "00007475706c656b657971235802000000733171245d7125284b014b02655802000000733271266825752e";
const char* kProto5 =
    "80059512010000000000007d94288c0169945d94284b004b014bff4d00014dffff4a000001004affffffff4a00"
    "0000808a0500000080008a08ffffffffffffff7f8a0800000000000000808a090000000000000080008a090000"
    "00000000000001658c01669447bff80000000000008c0173948c0a68c3a96c6c6f20e29c93948c016294430200"
    "ff948c0174944b014b024b0386945d9487948c03736574948f94284b01908c02667394284b0291948c016e944e"
    "8c015494888c014694898c026f64948c0b636f6c6c656374696f6e73948c0b4f72646572656444696374949394"
    "2952948c0161944b01734b018c06696e746b6579944b014b0286948c087475706c656b6579948c027331945d94"
    "284b014b02658c02733294681d752e";

void check_reference_object(const PickleValue& root) {
  REQUIRE(root.kind == Kind::kDict);
  REQUIRE(root.entries.size() == 15);
  const PickleValue* ints = root.get("i");
  REQUIRE(ints->kind == Kind::kList);
  const std::vector<int64_t> want = {
      0, 1, 255, 256, 65535, 65536, -1, -2147483648LL, 2147483648, INT64_MAX, INT64_MIN};
  REQUIRE(ints->items.size() == want.size() + 2);
  for (size_t i = 0; i < want.size(); ++i) {
    CHECK(ints->items[i]->kind == Kind::kInt);
    CHECK(ints->items[i]->integer == want[i]);
  }
  // 2**63 and 2**64 do not fit: placeholders that keep the raw bytes.
  CHECK(ints->items[11]->kind == Kind::kObject);
  CHECK(ints->items[11]->text == "builtins.int");
  CHECK(ints->items[12]->state->text.size() == 9);
  CHECK(root.get("f")->real == -1.5);
  CHECK(root.get("s")->text == "h\xc3\xa9llo \xe2\x9c\x93");
  CHECK(root.get("b")->kind == Kind::kBytes);
  CHECK(root.get("b")->text == "\x00\xff"s);
  const PickleValue* t = root.get("t");
  REQUIRE(t->kind == Kind::kTuple);
  REQUIRE(t->items.size() == 3);
  CHECK(t->items[1]->items[1]->integer == 3);
  CHECK(t->items[2]->kind == Kind::kList);
  CHECK(root.get("set")->kind == Kind::kSet);
  CHECK(root.get("set")->items.at(0)->integer == 1);
  CHECK(root.get("fs")->kind == Kind::kSet);
  CHECK(root.get("fs")->items.at(0)->integer == 2);
  CHECK(root.get("n")->kind == Kind::kNone);
  CHECK(root.get("T")->boolean);
  CHECK_FALSE(root.get("F")->boolean);
  const PickleValue* od = root.get("od");
  REQUIRE(od->kind == Kind::kDict);
  CHECK(od->get("a")->integer == 1);
  // Non-string keys keep their type; memo references share one node.
  CHECK(root.entries[11].first->kind == Kind::kInt);
  CHECK(evax::pickle_key_text(*root.entries[11].first) == "1");
  CHECK(root.entries[11].second->text == "intkey");
  CHECK(evax::pickle_key_text(*root.entries[12].first) == "<tuple>");
  CHECK(root.get("s1") == root.get("s2"));
  CHECK(root.get("s1")->items.size() == 2);
}

}  // namespace

TEST_CASE("pickles of protocols 2 and 5 decode to the same values") {
  check_reference_object(evax::pickle_loads(from_hex(kProto2), "p2")->root());
  check_reference_object(evax::pickle_loads(from_hex(kProto5), "p5")->root());
  auto ba = evax::pickle_loads(from_hex("8005950d000000000000009602000000000000006162942e"), "ba");
  CHECK(ba->root().kind == Kind::kBytes);
  CHECK(ba->root().text == "ab");
}

TEST_CASE("unknown globals become placeholders that record arguments and state") {
  // argparse.Namespace(lr=0.1) as protocol 2 writes it: NEWOBJ, then BUILD with the __dict__.
  const std::string ns =
      "\x80\x02"
      "cargparse\nNamespace\n)\x81}X\x02\x00\x00\x00lrG?\xb9\x99\x99\x99\x99\x99\x9a"
      "sb."s;
  auto tree = evax::pickle_loads(ns, "ns");
  const PickleValue& v = tree->root();
  CHECK(v.kind == Kind::kObject);
  CHECK(v.type_name() == "argparse.Namespace");
  CHECK(evax::pickle_describe(v) == "argparse.Namespace");
  REQUIRE(v.state != nullptr);
  CHECK(v.state->get("lr")->real == 0.1);

  // os.system('rm -rf /') is recorded, never run.
  const std::string evil =
      "\x80\x02"
      "cos\nsystem\nX\x08\x00\x00\x00rm -rf /\x85R."s;
  auto e = evax::pickle_loads(evil, "evil");
  CHECK(evax::pickle_describe(e->root()) == "os.system('rm -rf /')");

  // A dict subclass: NEWOBJ then SETITEMS on the placeholder.
  const std::string sub =
      "\x80\x02"
      "c__main__\nAttrDict\n)\x81(X\x01\x00\x00\x00"
      "aK\x01u."s;
  auto s = evax::pickle_loads(sub, "sub");
  CHECK(s->root().is_mapping());
  CHECK(s->root().get("a")->integer == 1);

  // A bare class reference (a dtype in hyper-parameters).
  auto g = evax::pickle_loads(
      "\x80\x02"
      "ctorch\nfloat16\n."s,
      "g");
  CHECK(evax::pickle_describe(g->root()) == "torch.float16");
  CHECK(g->root().args == nullptr);
}

TEST_CASE("malformed pickles throw DataError with the source and the defect") {
  struct Case {
    std::string data;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"\x80\x02."s, "stack underflow"},
      {"\x80\x02h\x05."s, "bad memo index 5"},
      {"\x80\x02\xff."s, "unsupported pickle opcode 0xff"},
      {"\x80\x02X\x10\x00\x00\x00"
       "ab"s,
       "truncated pickle"},
      {"\x80\x02N"s, "no STOP"},
      {""s, "no STOP"},
      {"\x80\x09N."s, "unsupported pickle protocol 9"},
      {"\x80\x02N)Q."s, "persistent id"},
      {"\x80\x02NK\x01R."s, "REDUCE on a None"},
      {"\x80\x02K\x01K\x02"
       "a."s,
       "APPEND to a int"},
      {"\x80\x02}K\x01u."s, "MARK missing"},
      {"\x80\x02}(K\x01u."s, "odd number"},
      {"\x80\x02"
       "cos\nsys"s,
       "GLOBAL without newline"},
      {"\x80\x02"
       "(N1."s,
       "stack underflow"},
      {"\x80\x02"
       "(0N."s,
       "N"},  // POP on an empty frame drops the MARK, as in CPython
      {"\x80\x02K\x01K\x01\x93."s, "STACK_GLOBAL needs two strings"},
      {"\x80\x02\x8b\xff\xff\xff\x7f"s, "truncated pickle"},
      {"\x80\x02\x95\x01\x00"s, "truncated pickle"},
  };
  for (const auto& c : cases) {
    INFO("pickle " << c.message);
    if (std::string(c.message) == "N") {
      CHECK(evax::pickle_loads(c.data, "src")->root().kind == Kind::kNone);
      continue;
    }
    try {
      evax::pickle_loads(c.data, "src.pkl");
      FAIL_CHECK("no error");
    } catch (const evax::DataError& e) {
      CHECK_THAT(e.what(), Contains("src.pkl") && Contains(c.message));
    }
  }
}

TEST_CASE("descriptions are one short line") {
  auto t = evax::pickle_loads(
      "\x80\x02(X\x01\x00\x00\x00"
      "aN\x88G@\x04\x00\x00\x00\x00\x00\x00]K\x01"
      "a}t."s,
      "d");
  const auto& items = t->root().items;
  REQUIRE(items.size() == 6);
  CHECK(evax::pickle_describe(*items[0]) == "str 'a'");
  CHECK(evax::pickle_describe(*items[1]) == "None");
  CHECK(evax::pickle_describe(*items[2]) == "bool True");
  CHECK(evax::pickle_describe(*items[3]) == "float 2.5");
  CHECK(evax::pickle_describe(*items[4]) == "list (1 item)");
  CHECK(evax::pickle_describe(*items[5]) == "dict (0 entries)");
  CHECK(evax::pickle_describe(t->root()) == "tuple (6 items)");
  auto nl = evax::pickle_loads(
      "\x80\x02X\x03\x00\x00\x00"
      "a\nb."s,
      "nl");
  CHECK(evax::pickle_describe(nl->root()) == "str 'a\\nb'");
  std::string long_text = "\x80\x02X\x64\x00\x00\x00"s + std::string(100, 'x') + ".";
  CHECK(evax::pickle_describe(evax::pickle_loads(long_text, "l")->root()).size() < 60);
}
