#!/usr/bin/env bash
# The last call of a sitting: bring back what the background sitting (sitting.sh) wrote, also
# when it has not finished. Until /tmp/out/DONE or UNTIL (epoch seconds), every 10 s: tar the
# results folder into $OUT and copy the study state, the best student and the front plot as soon
# as they exist (a time-out still brings back the latest copies; ≤ 8 files come back).
#   UNTIL=$(( $(date +%s) + 300 )) bash benchmarks/gpu/collect.sh
set -u
O=${O:-/tmp/out}; UNTIL=${UNTIL:-$(( $(date +%s) + 540 ))}
grab() {
  tar czf "$OUT/r.tgz.tmp" -C "$O" r 2> /dev/null && mv "$OUT/r.tgz.tmp" "$OUT/r.tgz"
  local n=${REPORT_NAME:-gpu_study}
  for f in "$O/gpu_study_state.tgz" "$O/r/${n}_best_student.pth" "$O/r/${n}_best_student.json" \
           "$O/r/${n}_front.png" "$O"/profile_trial_loop_trace*_h200.json.gz; do
    [[ -f "$f" ]] && cp "$f" "$OUT/"
  done
}
while [[ ! -f "$O/DONE" ]] && (( $(date +%s) < UNTIL )); do grab; sleep 10; done
grab; ls -la "$OUT"; tail -20 "$O/r/timeline.txt"
