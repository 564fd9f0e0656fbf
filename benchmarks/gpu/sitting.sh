#!/usr/bin/env bash
# One device sitting on the lent H200 for issues 15, 16 and 17, run in the background
# (setsid nohup) and polled: the training steps vs the mamba_ssm reference in fp32 / tf32 / bf16
# (issue 15), the energy attribution study (issue 17), the recipe student at tf32 (issue 15),
# then the GPU study (issue 16) until END_AT, when it is stopped and its state packed to come
# back (benchmarks/gpu/study_state.py) and resume at the next sitting; `report` writes the
# study's results; `scanvar` times benchmarks/gpu/variants/; `bankcost` trains the study's base
# trial with the live DVMSR teacher and with a teacher bank (same seed and iterations).
#
# Before: the data root at /tmp/devdata (train/{T91,BSD200}/HR, benchmarks/{Set5,Set14}/HR,
# checkpoints/DVMSR.pth), the Ray/Optuna/MLflow bundle installed (/tmp/site on PYTHONPATH),
# mamba-ssm's wheel parts in /tmp/wheels (built by build_mamba_ssm.sh), a packed study state
# in /tmp/state/gpu_study_state.tgz when resuming. BSD100 for the report's scores goes under
# another root (REPORT_DATA=/tmp/bsdroot with benchmarks/BSD100/HR): under DATA it would add
# BSD100 to the study's scored sets, change its identity, and --resume would refuse it.
# ALONE (ray | process | both, default ray) is energy_attribution.py's --alone. `profile`: a
# torch.profiler table of the student step (benchmarks/profile_step.py).
# STUDY_CONFIG, W (its folder), STATE, STUDY_SET pick the study; REPORT_NAME names the report's files
# (gpu_study: gpu_study_h200.json, gpu_study_best_student.pth, gpu_study_front.png).
# `loopprof`: the recipe student's real trial loop profiled (benchmarks/profile_trial_loop.py).
# `inference`: the CUDA-graph tests, then batch-1 DVMSR inference (triton, cuda, reference), eager and
# replayed from CUDA graphs (benchmarks/bench_dvmsr_inference.py --cuda-graphs; needs /tmp/wheels).
# `profinf`: the host time of batch-1 eager inference per backend (benchmarks/profile_inference.py).
# `cudatests`: the CUDA tests of the models and the trial's GPU paths (needs the bundle).
#   END_AT=$(( $(date +%s) + 1200 )) STAGES="step energy recipe study report" \
#     setsid nohup bash benchmarks/gpu/sitting.sh > /tmp/sitting.log 2>&1 &
# Stages run in the order STAGES names them. Results land in /tmp/out (r/*.json and logs, results.tgz, gpu_study_state.tgz, DONE).
set -uo pipefail
export PYTHONUNBUFFERED=1
O=${O:-/tmp/out}; R=$O/r; mkdir -p "$R"
DATA=${DATA:-/tmp/devdata}; W=${W:-/tmp/gpu_study}; STATE=${STATE:-/tmp/state/gpu_study_state.tgz}
STUDY_CONFIG=${STUDY_CONFIG:-benchmarks/configs/gpu_study.yaml}
STAGES=${STAGES:-"step energy recipe study"}
END_AT=${END_AT:-$(( $(date +%s) + 1200 ))}
t0=$(date +%s); el() { echo "[t=$(( $(date +%s) - t0 ))s] $*" | tee -a "$R/timeline.txt"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv \
  > "$R/smi.txt" 2>&1

with_mamba_ssm() {  # run "$@" with mamba-ssm installed from its wheel parts (the reference's side), then uninstall it
  el "mamba-ssm from its wheel"
  w=$(cat /tmp/wheels/mamba_ssm_wheel_name.txt) && cat /tmp/wheels/mamba_ssm_whl.part_* > "/tmp/$w" \
    && python3 -m pip install -q --no-deps "/tmp/$w" > "$R/mamba_install.log" 2>&1
  python3 -c "import mamba_ssm; print('mamba_ssm', mamba_ssm.__version__)" 2>&1 | tee -a "$R/timeline.txt"
  "$@"
  python3 -m pip uninstall -q -y mamba_ssm > /dev/null 2>&1  # srstudy's side runs without it from here on
}
train_steps() {
  el "training steps vs the reference (fp32, tf32, bf16)"
  python3 benchmarks/bench_train_step.py --backends triton,cuda --precisions fp32,tf32,bf16 --repeats 10 --warmup 3 \
    --out "$R/train_step_h200.json" > "$R/train_step.log" 2>&1
  grep -E "^(triton|cuda|reference)/|ratio\"|Error" "$R/train_step.log" | head -40
}
stage_step() { with_mamba_ssm train_steps; }
inference() {
  el "CUDA-graph tests, then batch-1 inference vs the reference, eager and replayed from CUDA graphs"
  python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda_graph.py > "$R/cuda_graph_tests.log" 2>&1
  tail -3 "$R/cuda_graph_tests.log"
  python3 benchmarks/bench_dvmsr_inference.py --device cuda --backends triton,cuda,reference --cuda-graphs \
    --rounds "${INFER_ROUNDS:-10}" --out "$R/dvmsr_inference_h200.json" > "$R/inference.log" 2>&1
  grep -E "^(triton|cuda|reference)" "$R/inference.log"
}
stage_inference() { with_mamba_ssm inference; }
stage_profinf() { with_mamba_ssm profile_inference; }
profile_inference() {  # issue 15: where batch-1 eager inference spends its host time, per backend
  el "host time of batch-1 eager inference (cProfile, torch.profiler)"
  python3 benchmarks/profile_inference.py --sizes 64,256 --out "$R/profile_inference_h200.json" \
    --text "$R/profile_inference_h200.txt" > "$R/profinf.log" 2>&1
  grep -E "wall|Error" "$R/profinf.log"
}
stage_cudatests() {  # every CUDA test: the models' and the trial's GPU paths (some need the bundle)
  el "CUDA tests: every -m cuda test (scan, conv, LayerNorm, graphs, warm-up, device batches, energy)"
  python3 -m pytest -q -m cuda -rs -p no:cacheprovider tests/test_scan_triton.py tests/test_scan_adjoint.py tests/test_scan.py \
    tests/test_cuda_graph.py tests/test_warmup.py tests/test_device_batches.py tests/test_energy.py \
    tests/test_energy_attribution.py > "$R/cuda_tests.log" 2>&1  # not `tests`: test_notebooks needs nbformat
  tail -3 "$R/cuda_tests.log" | tee -a "$R/timeline.txt"
}
stage_profile() {  # where the student step's time goes now (issue 15: the next lever)
  el "profile of the student step (triton, fp32 / tf32)"
  python3 benchmarks/profile_step.py --impls triton --precisions fp32,tf32 --rows 40 --out "$R/profile_step_triton_h200.txt" \
    2>&1 | grep "===="
}
stage_energy() {
  el "energy attribution (4 trials at 0.25 GPU, then each alone)"
  python3 benchmarks/energy_attribution.py --workdir /tmp/ea --out "$R/energy_attribution_h200.json" \
    --set "trial.data.train=[$DATA/train/T91/HR]" --set "trial.data.val=[$DATA/benchmarks/Set5/HR]" \
    --set trial.energy_window.min_seconds=8 --alone "${ALONE:-ray}" > "$R/energy.log" 2>&1
  tail -5 "$R/energy.log"
}
stage_recipe() {  # RECIPE_PRECISION (default tf32); another precision writes recipe_trial_<precision>_h200.json
  local prec=${RECIPE_PRECISION:-tf32} name=recipe_trial_h200
  [[ $prec != tf32 ]] && name=recipe_trial_${prec}_h200
  el "recipe student, alpha 0, $prec"
  python3 benchmarks/paper_recipe_trial.py --data-root "$DATA" --workdir "/tmp/recipe_$prec" --out "$R/$name.json" \
    --set alpha=0 --set "precision=$prec" --sets Set5,Set14 > "$R/recipe_$prec.log" 2>&1
  tail -3 "$R/recipe_$prec.log"
}
stage_loopprof() {  # issue 15: where the real trial's loop time goes (GPU idle, host phases, setup, validation)
  local prec=${LOOPPROF_PRECISION:-tf32} name=profile_trial_loop_h200  # another precision: ..._<precision>_h200
  [[ $prec != tf32 ]] && name=profile_trial_loop_${prec}_h200
  el "trial loop profile: recipe student, alpha 0, $prec, ${LOOPPROF_ITERATIONS:-300} iterations"
  python3 benchmarks/profile_trial_loop.py --data-root "$DATA" --set alpha=0 --set "precision=$prec" --sets Set5,Set14 \
    --iterations "${LOOPPROF_ITERATIONS:-300}" --out "$R/$name.json" \
    --trace "$O/${name/profile_trial_loop/profile_trial_loop_trace}.json.gz" > "$R/loopprof_$prec.log" 2>&1  # trace outside r/
  tail -12 "$R/loopprof_$prec.log"
}
stage_study() {
  if [[ -f "$STATE" && ! -d "$W" ]]; then
    el "unpacking the study state"; python3 benchmarks/gpu/study_state.py unpack "$STATE"
  fi
  local sets=(); for kv in ${STUDY_SET:-}; do sets+=(--set "$kv"); done  # e.g. STUDY_SET="max_concurrent=8" on 2 GPUs
  el "GPU study until $(date -d @"$END_AT" +%T)"
  # a folder holding another config (e.g. BSD100 added under $DATA) is refused by the launcher, naming what differs
  srstudy launch --config "$STUDY_CONFIG" --data-root "$DATA" --workdir "$W" --resume "${sets[@]}" \
    >> "$R/study.log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2> /dev/null && (( $(date +%s) < END_AT )); do sleep 5; done
  if kill -0 "$pid" 2> /dev/null; then
    el "deadline: SIGINT to the launcher (Tune saves its experiment state)"
    kill -INT "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2> /dev/null || break; sleep 1; done
    kill -0 "$pid" 2> /dev/null && { el "still running: kill -9"; kill -9 "$pid"; }
  fi
  wait "$pid"; el "launcher exit $?"
  ray stop --force > /dev/null 2>&1
  python3 benchmarks/gpu/study_state.py pack "$W" "$O/gpu_study_state.tgz" | tee -a "$R/timeline.txt"
}
stage_report() {
  el "GPU study report (every trial, front, best student: BSD100, ONNX export, latency)"
  local n=${REPORT_NAME:-gpu_study}  # gpu_study_inherit for the second study
  python3 benchmarks/gpu_study_report.py --workdir "$W" --data-root "${REPORT_DATA:-$DATA}" --out "$R/${n}_h200.json" \
    --best-checkpoint "$R/${n}_best_student.pth" --front-png "$R/${n}_front.png" --device cuda \
    --export-dir "$R/export_$n" > "$R/report_$n.log" 2>&1
  tail -4 "$R/report_$n.log"
}
stage_scanvar() { with_mamba_ssm scan_variants; }  # mamba_ssm's kernel is the row they are compared with
scan_variants() {  # the scan variants under benchmarks/gpu/variants/ against the shipped kernels, one run
  el "scan variants at the training shapes"
  local extras=(); for f in benchmarks/gpu/variants/*.py; do extras+=(--extra "$(basename "$f" .py)=$f"); done
  timeout "${SCANVAR_S:-900}" python3 benchmarks/bench_scan_tiles.py "${extras[@]}" --no-conv --keep 4 \
    --out "$R/scan_tiles_variants.json" \
    > "$R/scan_tiles_variants.log" 2>&1
  grep -E "^(shape|D[0-9])" "$R/scan_tiles_variants.log" | grep -v "{"
}
# sessions 9-10 swept registers, stages and the layout (scan_configs*_h200.json). Set every key a row depends on:
# a key a row leaves out keeps the shipped value for each dtype (session 10's first sweep left bf16 at 3 stages).
SCAN_CONFIGS=${SCAN_CONFIGS:-'[{"bwd_spread": true, "bwd_vec": {"default": 4}, "bwd_maxnreg": {"default": 128}, "bwd_stages": {"default": 1}}, {"bwd_spread": true, "bwd_vec": {"default": 4}, "bwd_maxnreg": {"default": 168}, "bwd_stages": {"default": 1}}]'}
stage_scanconf() { with_mamba_ssm scan_configs; }
scan_configs() {  # issue 15: the backward pipelined / register-capped (SCAN_CONFIGS), then the step with the fastest
  el "scan backward CONFIGs at the training shapes"
  python3 benchmarks/bench_scan_tiles.py --configs "$SCAN_CONFIGS" --no-conv --out "$R/scan_configs_h200.json" \
    > "$R/scan_configs.log" 2>&1
  grep -E "^D[0-9]" "$R/scan_configs.log" | grep -v "{\"fwd" | tail -60
  python3 benchmarks/gpu/pick_scan_config.py "$R/scan_configs_h200.json" > "$R/best_scan_config.json" 2>> "$R/timeline.txt"
  cat "$R/best_scan_config.json" | tee -a "$R/timeline.txt"
  el "CUDA scan tests under every CONFIG"
  python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_scan_triton.py tests/test_scan_adjoint.py \
    > "$R/scan_cuda_tests.log" 2>&1; tail -3 "$R/scan_cuda_tests.log" | tee -a "$R/timeline.txt"
  el "training steps with the fastest CONFIG vs the reference (fp32, bf16)"
  python3 benchmarks/bench_train_step.py --backends triton --precisions fp32,bf16 --repeats 10 --warmup 3 \
    --scan-config "$(cat "$R/best_scan_config.json")" --out "$R/train_step_h200.json" > "$R/train_step.log" 2>&1
  grep -E "^(triton|cuda|reference)/|ratio\"|Error" "$R/train_step.log" | head -40
  [[ ${PROFILE_STEP:-1} == 0 ]] && return
  el "profile of the student step with the fastest CONFIG (fp32)"
  python3 benchmarks/profile_step.py --impls triton --precisions fp32 --rows 40 \
    --scan-config "$(cat "$R/best_scan_config.json")" --out "$R/profile_step_triton_h200.txt" 2>&1 | grep "===="
}
stage_bankcost() {  # issue 16 item 1: the teacher bank's PSNR against the live teacher, same seed and iterations
  local it=${BANK_ITERATIONS:-1000} patches=${BANK_PATCHES:-16384}
  for mode in live bank; do
    el "GPU study's base trial, DVMSR teacher $mode, $it iterations"
    local extra=(); [[ $mode == bank ]] && extra=(--set "teacher.bank_patches=$patches")
    python3 benchmarks/paper_recipe_trial.py --data-root "$DATA" --workdir "/tmp/bankcost_$mode" \
      --out "$R/bankcost_${mode}_h200.json" --set alpha=0.8 --set precision=tf32 --set "iterations=$it" \
      --set "teacher.checkpoint=$DATA/checkpoints/DVMSR.pth" --set teacher.arch.n_groups=4 --sets Set5,Set14 \
      "${extra[@]}" > "$R/bankcost_$mode.log" 2>&1
    tail -3 "$R/bankcost_$mode.log"
  done
}
for stage in $STAGES; do  # in the order given
  if declare -f "stage_$stage" > /dev/null; then "stage_$stage"; else el "unknown stage $stage"; fi
done
el "done"
tar czf "$O/results.tgz" -C "$O" r
touch "$O/DONE"
