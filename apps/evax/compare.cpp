// evax compare: runs' headline test metrics next to the paper's numbers (their configs' `paper:`
// sections) and the difference, runs in progress marked, and the config keys that differ.
#include <iostream>

#include "commands.h"
#include "evax/core/files.h"
#include "evax/report/compare.h"

namespace evax::app {

int cmd_compare(const Args& args) {
  std::vector<std::string> runs;
  std::string out = "compare";
  ArgParser p("compare",
              "Compare runs: each run's headline test metric (the paper's metric when its config\n"
              "has a `paper:` section, else mAUC / accuracy / mDice by task) in percent, the\n"
              "paper's value and the difference, the run's state (in progress marked), then the\n"
              "config keys whose values differ. Glob patterns are expanded (also when quoted).\n"
              "Prints the Markdown table and writes PREFIX.md and PREFIX.html.");
  p.option("--out", &out, "PREFIX", "output files PREFIX.md and PREFIX.html (default: compare)");
  p.positional("RUN", &runs, "run directories or glob patterns (runs/cxr14-*)").required();
  if (!p.parse(args)) return 0;
  if (out.empty()) raise<UsageError>("--out: must not be empty");
  std::vector<RunSummary> summaries;
  for (const auto& d : expand_run_args(runs)) summaries.push_back(run_summary(d));
  const CompareTables t = compare_runs(summaries);
  write_file_atomic(out + ".md", t.markdown);
  write_file_atomic(out + ".html", t.html);
  std::cout << t.markdown << "\nwrote " << out << ".md and " << out << ".html\n";
  return 0;
}

}  // namespace evax::app
