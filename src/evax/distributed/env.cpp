#include "evax/distributed/env.h"

#include <cerrno>
#include <cstdlib>
#include <optional>

#include "evax/core/error.h"

namespace evax {
namespace {

std::optional<std::string> get_env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

/// Strict decimal integer: the whole string (no spaces, no '+').
bool parse_int(const std::string& s, long long* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  const bool digit_first = (s[0] >= '0' && s[0] <= '9') || (s[0] == '-' && s.size() > 1);
  if (!digit_first || errno != 0 || end != s.c_str() + s.size()) return false;
  *out = v;
  return true;
}

int env_int(const char* name, const std::string& value, long long lo, long long hi) {
  long long v = 0;
  if (!parse_int(value, &v))
    raise<ConfigError>("environment variable ", name, "='", value, "' is not an integer");
  if (v < lo || v > hi)
    raise<ConfigError>("environment variable ", name, "=", value, " is out of range [", lo, ", ",
                       hi, "]");
  return static_cast<int>(v);
}

std::optional<int> env_int_opt(const char* name, long long lo, long long hi) {
  auto v = get_env(name);
  if (!v) return std::nullopt;
  return env_int(name, *v, lo, hi);
}

int env_int_required(const char* name, const char* why, long long lo, long long hi) {
  auto v = get_env(name);
  if (!v) raise<ConfigError>("environment variable ", name, " is not set (", why, ")");
  return env_int(name, *v, lo, hi);
}

bool env_bool(const char* name, bool dflt) {
  auto v = get_env(name);
  if (!v) return dflt;
  if (*v == "1" || *v == "true" || *v == "True" || *v == "TRUE") return true;
  if (*v == "0" || *v == "false" || *v == "False" || *v == "FALSE" || v->empty()) return false;
  raise<ConfigError>("environment variable ", name, "='", *v, "' is not a boolean (True/False)");
}

constexpr long long kMaxRanks = 1 << 20;

/// Tasks on node `node_id` from a task count list in SLURM's compressed form "2(x3),1" (the value
/// of the environment variable `var`).
int slurm_tasks_on_node(const char* var, const std::string& spec, int node_id) {
  auto bad = [&]() -> int {
    raise<ConfigError>("environment variable ", var, "='", spec,
                       "' is not a task count list like '2(x3),1'");
  };
  int node = 0;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    const size_t len = comma == std::string::npos ? std::string::npos : comma - pos;
    std::string item = spec.substr(pos, len);
    long long count = 0, repeat = 1;
    size_t paren = item.find("(x");
    if (paren != std::string::npos) {
      const std::string times = item.substr(paren + 2, item.size() - paren - 3);
      if (item.back() != ')' || !parse_int(times, &repeat)) return bad();
      item = item.substr(0, paren);
    }
    if (!parse_int(item, &count) || count < 1 || repeat < 1) return bad();
    if (node_id < node + repeat) return static_cast<int>(count);
    node += static_cast<int>(repeat);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  raise<ConfigError>("environment variable ", var, "='", spec, "' lists fewer than ", node_id + 1,
                     " nodes (SLURM_NODEID=", node_id, ")");
}

DistEnv from_torchrun() {
  DistEnv e;
  e.source = "torchrun";
  e.world_size = env_int_required("WORLD_SIZE", "RANK is set", 1, kMaxRanks);
  e.rank = env_int_required("RANK", "WORLD_SIZE is set", 0, kMaxRanks);
  e.local_rank = env_int_opt("LOCAL_RANK", 0, kMaxRanks).value_or(e.rank);
  e.local_world_size = env_int_opt("LOCAL_WORLD_SIZE", 1, kMaxRanks).value_or(e.world_size);
  auto addr = get_env("MASTER_ADDR");
  auto port = env_int_opt("MASTER_PORT", 1, 65535);
  if (e.world_size > 1 && (!addr || addr->empty()))
    raise<ConfigError>("environment variable MASTER_ADDR is not set (needed when WORLD_SIZE=",
                       e.world_size, ")");
  if (e.world_size > 1 && !port)
    raise<ConfigError>("environment variable MASTER_PORT is not set (needed when WORLD_SIZE=",
                       e.world_size, ")");
  if (addr && !addr->empty()) e.master_addr = *addr;
  if (port) e.master_port = *port;
  e.use_agent_store = env_bool("TORCHELASTIC_USE_AGENT_STORE", false);
  e.restart_count = env_int_opt("TORCHELASTIC_RESTART_COUNT", 0, 1 << 30).value_or(0);
  return e;
}

DistEnv from_slurm() {
  DistEnv e;
  e.source = "slurm";
  e.world_size = env_int_required("SLURM_NTASKS", "SLURM_PROCID is set", 1, kMaxRanks);
  e.rank = env_int_required("SLURM_PROCID", "SLURM_NTASKS is set", 0, kMaxRanks);
  e.local_rank = env_int_opt("SLURM_LOCALID", 0, kMaxRanks).value_or(0);
  const int node_id = env_int_opt("SLURM_NODEID", 0, kMaxRanks).value_or(0);
  // srun gives each task its step's layout (SLURM_STEP_TASKS_PER_NODE), which may differ from the
  // job's request (SLURM_NTASKS_PER_NODE, inherited from sbatch) when srun is given other -n/-N.
  if (auto step = get_env("SLURM_STEP_TASKS_PER_NODE"); step && !step->empty()) {
    e.local_world_size = slurm_tasks_on_node("SLURM_STEP_TASKS_PER_NODE", *step, node_id);
  } else if (auto n = env_int_opt("SLURM_NTASKS_PER_NODE", 1, kMaxRanks)) {
    e.local_world_size = *n;
  } else if (auto spec = get_env("SLURM_TASKS_PER_NODE")) {
    e.local_world_size = slurm_tasks_on_node("SLURM_TASKS_PER_NODE", *spec, node_id);
  } else {
    auto nodes = env_int_opt("SLURM_NNODES", 1, kMaxRanks);
    if (nodes && *nodes > 1)
      raise<ConfigError>("cannot tell the tasks per node: set SLURM_NTASKS_PER_NODE "
                         "(SLURM_NNODES=", *nodes, ", SLURM_TASKS_PER_NODE unset)");
    e.local_world_size = e.world_size;
  }
  // MASTER_ADDR wins; else the first allocated node, where rank 0 runs under SLURM's default
  // block distribution. The launch node's address comes last: after `salloc` it is the login
  // node, which runs no rank.
  if (auto addr = get_env("MASTER_ADDR"); addr && !addr->empty()) {
    e.master_addr = *addr;
  } else if (auto list = get_env("SLURM_JOB_NODELIST"); list && !list->empty()) {
    e.master_addr = slurm_first_host(*list);
  } else if (auto list2 = get_env("SLURM_NODELIST"); list2 && !list2->empty()) {
    e.master_addr = slurm_first_host(*list2);
  } else if (auto ip = get_env("SLURM_LAUNCH_NODE_IPADDR"); ip && !ip->empty()) {
    e.master_addr = *ip;
  } else if (e.world_size > 1) {
    raise<ConfigError>("cannot find the rendezvous host: set MASTER_ADDR (SLURM_JOB_NODELIST "
                       "and SLURM_LAUNCH_NODE_IPADDR are unset)");
  }
  if (auto port = env_int_opt("MASTER_PORT", 1, 65535)) {
    e.master_port = *port;
  } else if (auto job = env_int_opt("SLURM_JOB_ID", 0, (1LL << 62))) {
    // Derived from the job id so that two jobs sharing a node do not collide.
    e.master_port = 20000 + *job % 10000;
  }
  return e;
}

void validate(const DistEnv& e) {
  const char* r = e.source == "slurm" ? "SLURM_PROCID" : "RANK";
  const char* w = e.source == "slurm" ? "SLURM_NTASKS" : "WORLD_SIZE";
  const char* lr = e.source == "slurm" ? "SLURM_LOCALID" : "LOCAL_RANK";
  const char* lw = e.source == "slurm" ? "SLURM_NTASKS_PER_NODE" : "LOCAL_WORLD_SIZE";
  if (e.rank >= e.world_size)
    raise<ConfigError>("environment variable ", r, "=", e.rank, " must be < ", w, "=",
                       e.world_size);
  if (e.local_world_size > e.world_size)
    raise<ConfigError>("environment variable ", lw, "=", e.local_world_size, " must be <= ", w,
                       "=", e.world_size);
  if (e.local_rank >= e.local_world_size)
    raise<ConfigError>("environment variable ", lr, "=", e.local_rank, " must be < ", lw, "=",
                       e.local_world_size);
  if (e.local_rank > e.rank)
    raise<ConfigError>("environment variable ", lr, "=", e.local_rank, " must be <= ", r, "=",
                       e.rank);
}

}  // namespace

std::string slurm_first_host(const std::string& nodelist) {
  // The first top-level entry ends at a comma outside brackets.
  size_t end = 0;
  int depth = 0;
  for (; end < nodelist.size(); ++end) {
    char c = nodelist[end];
    if (c == '[') ++depth;
    if (c == ']' && --depth < 0) break;
    if (c == ',' && depth == 0) break;
  }
  if (depth != 0)
    raise<ConfigError>("environment variable SLURM_JOB_NODELIST='", nodelist,
                       "' has unbalanced brackets");
  const std::string entry = nodelist.substr(0, end);
  // Each bracket group "[01-04,07]" becomes its first value "01" (zero padding kept).
  std::string host;
  for (size_t i = 0; i < entry.size(); ++i) {
    if (entry[i] != '[') {
      host += entry[i];
      continue;
    }
    size_t close = entry.find(']', i);
    std::string first = entry.substr(i + 1, close - i - 1);
    first = first.substr(0, first.find_first_of(",-"));
    if (first.empty())
      raise<ConfigError>("environment variable SLURM_JOB_NODELIST='", nodelist,
                         "' has an empty range");
    host += first;
    i = close;
  }
  if (host.empty())
    raise<ConfigError>("environment variable SLURM_JOB_NODELIST='", nodelist, "' names no host");
  return host;
}

DistEnv dist_env_from_environment() {
  DistEnv e;
  if (get_env("RANK") || get_env("WORLD_SIZE")) {
    e = from_torchrun();
  } else if (get_env("SLURM_PROCID") && get_env("SLURM_NTASKS")) {
    e = from_slurm();
  }
  validate(e);
  return e;
}

std::string describe(const DistEnv& e) {
  std::string s = str_cat("rank ", e.rank, "/", e.world_size, " (local ", e.local_rank, "/",
                          e.local_world_size, ") via ", e.source);
  if (e.world_size > 1) {
    s += str_cat(", store ", e.master_addr, ":", e.master_port);
    if (e.use_agent_store) s += str_cat(" (torchrun agent, attempt ", e.restart_count, ")");
  }
  return s;
}

}  // namespace evax
