#!/usr/bin/env bash
# watcher (session 4): stop the study STEP_S before the deadline, then the step benchmark vs mamba_ssm
set -u
STOP_AT=$1
while (( $(date +%s) < STOP_AT )); do [[ -f /tmp/out/DONE ]] && break; sleep 5; done
pid=$(pgrep -f "srstudy launch" | head -1)
[[ -n "$pid" ]] && { echo "[watch] SIGINT $pid at $(date +%T)" >> /tmp/out/r/timeline.txt; kill -INT "$pid"; }
while [[ ! -f /tmp/out/DONE ]]; do sleep 3; done
cd /tmp/repo
echo "[watch] step bench start $(date +%T)" >> /tmp/out/r/timeline.txt
w=$(cat /tmp/wheels/mamba_ssm_wheel_name.txt); python3 -m pip install -q --no-deps "/tmp/$w" > /tmp/out/r/mamba_install2.log 2>&1
python3 benchmarks/bench_train_step.py --backends triton,cuda --precisions fp32,tf32,bf16 --repeats 10 --warmup 3 \
    --out /tmp/out/r/train_step_h200.json > /tmp/out/r/train_step.log 2>&1
echo "[watch] step bench rc $? $(date +%T)" >> /tmp/out/r/timeline.txt
(cd /tmp/out && tar czf results.tgz r && touch STEPDONE)
