#!/usr/bin/env bash
# The service benchmarks on another revision and on this tree, alternating, in one run:
#   bash benchmarks/compare_trees.sh REV [ROUNDS]     (results under runs/compare-<REV>/)
# For a change that must not cost speed: `make bench-service` (service_bench + overload) and
# `python -m loadtest.phases 1:10,2:60`, each in fresh server processes, REV's code then this tree's.
set -euo pipefail
rev=${1:?usage: compare_trees.sh REV [ROUNDS]}; rounds=${2:-2}
here=$(cd "$(dirname "$0")/.." && pwd); py="$here/.venv/bin/python"
out="$here/runs/compare-$rev"; other="$out/tree"
mkdir -p "$out"
[ -d "$other" ] || git -C "$here" worktree add --detach "$other" "$rev"
for round in $(seq "$rounds"); do
  for tree in "$other" "$here"; do
    name=$([ "$tree" = "$here" ] && echo this || echo "$rev"); dir="$out/$name-$round"; mkdir -p "$dir"
    echo "$name round $round: $(date +%T)"
    (cd "$tree" && PYTHONPATH="$tree" "$py" -m loadtest.service_bench --out "$dir" > "$dir/service_bench.log" 2>&1)
    (cd "$tree" && PYTHONPATH="$tree" "$py" -m loadtest.overload --out "$dir/overload.json" > "$dir/overload.log" 2>&1)
    (cd "$tree" && PYTHONPATH="$tree" "$py" -m loadtest.phases 1:10,2:60 > "$dir/phases.log" 2>&1)
  done
done
echo "results: $out/*-<round>/ (service_bench.md, overload.json, phases.log)"
