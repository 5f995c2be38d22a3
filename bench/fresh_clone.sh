#!/usr/bin/env bash
# Time a command end to end from a fresh clone: clone this repository's HEAD into a new folder, install it
# in a new virtual environment as the README's quick start does (no extras; EXTRAS=a,b adds extras),
# run the command there, record.
# Usage: ROBUSTOPT_DATA=../shared/data bash bench/fresh_clone.sh LOG COMMAND...
#   e.g. bash bench/fresh_clone.sh bench/results/cifar10-cpu/fresh-clone.log \
#            robustopt reproduce madry-cifar10 --budget cpu --out runs/cifar10-cpu
# COMMAND runs in the clone with its venv first on PATH; LOG gets the commit, the machine, the install
# and command wall times (UTC start and end, load average at both) and the command's output.
# The clone is kept (printed at the end) so its results can be read; CLONE= chooses its folder.
# A command longer than the machine stays up (a killed working session) is timed in segments: run the
# same line again with RESUME=1 and CLONE= the kept clone; it appends a new segment to LOG without
# cloning or installing again (the command must resume itself, as `reproduce` does). Every segment
# writes a heartbeat line ("alive ...") to LOG.alive each 30 s, so a segment that was killed still
# has an end time, to within 30 s.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bash bench/fresh_clone.sh LOG COMMAND..." >&2; exit 2; }
LOG=$(realpath -m "$1"); shift
REPO=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
[ -n "${ROBUSTOPT_DATA:-}" ] && export ROBUSTOPT_DATA=$(realpath "$ROBUSTOPT_DATA")  # the clone lives elsewhere
stamp() { echo "$1 $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo ?)"; }
mkdir -p "$(dirname "$LOG")"
if [ "${RESUME:-0}" = 1 ]; then
  [ -n "${CLONE:-}" ] && [ -x "$CLONE/.venv/bin/python" ] && [ -f "$LOG" ] \
    || { echo "RESUME=1 needs CLONE= the kept clone (with its .venv) and the LOG of its first segment" >&2; exit 2; }
  cd "$CLONE"
  echo "# resumed segment: $*" >> "$LOG"
  tail -n 1 "$LOG.alive" 2>/dev/null | sed 's/^/previous segment last /' >> "$LOG" || true
else
  CLONE=${CLONE:-$(mktemp -d -t robustopt-fresh-XXXXXX)/robustopt}
  {
    echo "# bench/fresh_clone.sh: $*"
    echo "commit $(git -C "$REPO" rev-parse HEAD); $(nproc) CPUs; $(uname -srm); OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
    stamp "clone+install start"
  } > "$LOG"
  T0=$(date +%s)
  git clone -q "$REPO" "$CLONE"
  cd "$CLONE"
  python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e ".${EXTRAS:+[$EXTRAS]}" >> "$LOG" 2>&1
  echo "install took $(( $(date +%s) - T0 )) s" >> "$LOG"
fi
T1=$(date +%s)
stamp "command start" >> "$LOG"
( while sleep 30; do stamp alive > "$LOG.alive.tmp" && mv "$LOG.alive.tmp" "$LOG.alive"; done ) &
HEARTBEAT=$!
trap 'kill $HEARTBEAT 2>/dev/null || true' EXIT
export PATH="$CLONE/.venv/bin:$PATH"
set +e
"$@" >> "$LOG" 2>&1
RC=$?
set -e
T2=$(date +%s)
stamp "command end: exit status $RC, $((T2 - T1)) s ($(( (T2 - T1) / 3600 )) h $(( (T2 - T1) % 3600 / 60 )) min)" >> "$LOG"
echo "clone kept in $CLONE; log $LOG"
exit $RC
