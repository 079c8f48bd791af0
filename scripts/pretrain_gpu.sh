#!/usr/bin/env bash
# Pretrain some of a profile's networks on one lent CUDA GPU, each with its unchanged recipe.
#
# For the device tool (an H200 for about 15 minutes, a bare copy of the working tree: no .git, no
# virtual environment), from the repository root:
#     NETWORKS="stylegan2 prior3d" BUDGET=550 bash scripts/pretrain_gpu.sh      # OUT=$OUT
# The machine's python3 is used when it has torch with CUDA (else the pinned environment is
# installed). The networks train side by side on the one GPU (every random number still drawn on
# the CPU, so the schedule is the CPU run's) until BUDGET seconds after the start; then each work
# folder artifacts/pretrain/<profile>/<network>/ (latest checkpoint, finished network, logs,
# samples, provenance.jsonl) is packed into $OUT/<network>.tar.part-NN, parts of 15 MiB, because
# the device tool returns at most 8 files of 16 MiB. A run that is not finished keeps its latest
# checkpoint in the pack and resumes on any machine.
#
# Back on a machine with the git checkout:
#     cat <files_at>/stylegan2.tar.part-* | tar -x -C artifacts/pretrain/cpu/
#     python -m drdpgan.pretrain export --network stylegan2 --profile cpu
# NETWORKS=drdpgan goes on with the DR-DPGAN run carried in pretrain_state/<profile>/drdpgan/ (with the
# shipped priors of the tree) and, unfinished, returns its new stash as drdpgan-stash.tar.part-NN:
#     git rm -q pretrain_state/cpu/drdpgan/ckpt_*.pt    # the new stash holds the newer checkpoint
#     cat <files_at>/drdpgan-stash.tar.part-* | tar -x -C pretrain_state/cpu/ && git add pretrain_state
# (finished, the work folder less its checkpoints: unpack into artifacts/pretrain/cpu/ and export it).
# NETWORKS=ablations trains Table 4's runs (drdpgan.pretrain_ablations) and returns the finished ones' results:
#     tar -xf <files_at>/ablations.tar -C pretrain_state/cpu/ && git add pretrain_state
# The copy had no .git, so its provenance lines hold commit null and the package's source
# fingerprint (source_sha256); the export ties them to the commit with that source
# (drdpgan.pretrain.attest_provenance) and refuses them if none has it.
set -uo pipefail
T0=$(date +%s)
OUT="${OUT:-out}"
BUDGET="${BUDGET:-550}"       # seconds from the start until the trainings are stopped and packed
PROFILE="${PROFILE:-cpu}"
NETWORKS="${NETWORKS:-stylegan2 prior3d}"
THREADS="${THREADS:-4}"       # CPU threads per training process
DEVICE="${DEVICE:-cuda}"      # DEVICE=cpu runs the same steps on the CPU (to test this script)
mkdir -p "$OUT" artifacts/logs
left() { local s=$(( T0 + BUDGET - $(date +%s) )); echo $(( s > 1 ? s : 1 )); }

if [ "$DEVICE" != cuda ] && [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
elif python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    PY=python3
else
    [ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/python -m pip install -q -r requirements.txt; }
    PY=.venv/bin/python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "$DEVICE" = cuda ]; then
    $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 2
fi
$PY -c "import json; from drdpgan.pretrain import code_state; print(json.dumps(code_state()))" | tee artifacts/logs/code_state.json

pids=()
priors=""
recipe_runs=""                             # drdpgan and ablations: the DR-DPGAN recipe's runs, from the shipped priors
STATE="pretrain_state/$PROFILE/drdpgan"   # a DR-DPGAN run carried in git (drdpgan.run_stash): it travels with the tree
[ -d "$STATE" ] && (cd "$STATE" && sha256sum -- *) > artifacts/logs/stash_before.sha256
for net in $NETWORKS; do
    if [ "$net" = drdpgan ] || [ "$net" = ablations ]; then
        recipe_runs="$recipe_runs $net"
    elif [ "$net" = stylegan2 ]; then
        timeout "$(left)" $PY -m drdpgan.pretrain stylegan2 --profile "$PROFILE" --device "$DEVICE" --threads "$THREADS" \
            --quiet > artifacts/logs/pretrain_stylegan2.log 2>&1 &
        pids+=($!)
    else
        priors="$priors $net"
    fi
done
if [ -n "$recipe_runs" ]; then
    (   # their faces once (CPU; --max-hours counts from after them), then each run until about 150 s before BUDGET:
        # drdpgan restores its stash, stops with a checkpoint and stashes it again; ablations (Table 4,
        # drdpgan.pretrain_ablations) keeps each finished run's result in pretrain_state/<profile>/ablations/
        timeout "$(left)" $PY -c "from drdpgan import stages; from drdpgan.pretrain import pretraining_faces; \
pretraining_faces('$PROFILE', progress=False); stages.face_data(stages.notebook_params('01_data', '$PROFILE'), False)" \
            > artifacts/logs/drdpgan_faces.log 2>&1
        hours=$(awk -v s="$(left)" 'BEGIN { h = (s - 150) / 3600; print (h > 0.01 ? h : 0.01) }')
        for net in $recipe_runs; do
            timeout "$(( $(left) > 40 ? $(left) - 30 : 10 ))" $PY -m drdpgan.pretrain "$net" --profile "$PROFILE" \
                --device "$DEVICE" --threads "$THREADS" --quiet --max-hours "$hours" $([ "$net" = drdpgan ] && echo --stash) \
                > "artifacts/logs/pretrain_$net.log" 2>&1 &
        done
        wait
    ) &
    pids+=($!)
fi
if [ -n "$priors" ]; then
    (   # the priors' faces once (CPU), then the priors side by side
        timeout "$(left)" $PY -c "from drdpgan.pretrain import pretraining_faces; pretraining_faces('$PROFILE', progress=False)" \
            > artifacts/logs/pretraining_faces.log 2>&1
        for net in $priors; do
            timeout "$(left)" $PY -m drdpgan.pretrain "$net" --profile "$PROFILE" --device "$DEVICE" --threads "$THREADS" \
                --quiet > "artifacts/logs/pretrain_$net.log" 2>&1 &
        done
        wait
    ) &
    pids+=($!)
fi
while sleep "${HEARTBEAT:-30}"; do  # a heartbeat in the output (every HEARTBEAT seconds)
    alive=0; for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 1 ] || break
    echo "t=$(( $(date +%s) - T0 ))s"; for f in artifacts/logs/pretrain_*.log; do echo "  $f: $(tail -c 300 "$f" | tr '\r\n' '  ' | tail -c 160)"; done
    tail -n 1 "artifacts/pretrain/$PROFILE/stylegan2/losses.csv" 2>/dev/null
done
wait

# pack: each work folder without the pretraining faces' cache and without all but the latest checkpoint
for net in $NETWORKS; do
    d="artifacts/pretrain/$PROFILE/$net"
    if [ "$net" = ablations ]; then  # the finished Table 4 runs (a few kB each): unpack into pretrain_state/<profile>/
        [ -d "pretrain_state/$PROFILE/ablations" ] && tar -C "pretrain_state/$PROFILE" -cf "$OUT/ablations.tar" ablations
        continue
    fi
    if [ "$net" = drdpgan ] && [ ! -f "$d/drdpgan.pt" ] && [ -f "$STATE/stash.json" ]; then
        # unfinished: the new stash, less the files that came with the tree unchanged (the stage caches); back here
        # unpack it over pretrain_state/<profile>/drdpgan/ and commit it
        changed=()
        for f in "$STATE"/*; do
            grep -qxF "$(cd "$STATE" && sha256sum -- "$(basename "$f")")" artifacts/logs/stash_before.sha256 2>/dev/null \
                || changed+=("drdpgan/$(basename "$f")")
        done
        tar -C "pretrain_state/$PROFILE" -cf - "${changed[@]}" | split -b 15M -d - "$OUT/drdpgan-stash.tar.part-"
        continue
    fi
    [ -d "$d" ] || continue
    excl=()
    if [ -d "$d/checkpoints" ]; then
        latest=$(ls "$d/checkpoints" | sort | tail -n 1)
        for f in $(ls "$d/checkpoints"); do [ "$f" = "$latest" ] || excl+=(--exclude="$net/checkpoints/$f"); done
    fi
    # a finished prior needs only its network file; an unfinished one its training state
    [ -f "$d/$net.pt" ] && excl+=(--exclude="$net/state")
    [ "$net" = drdpgan ] && [ -f "$d/drdpgan.pt" ] && excl+=(--exclude="$net/checkpoints" --exclude="$net/measured")
    tar -C "artifacts/pretrain/$PROFILE" -cf - "${excl[@]}" "$net" | split -b 15M -d - "$OUT/$net.tar.part-"
done
tar -cf "$OUT/logs.tar" artifacts/logs
$PY -m drdpgan.pretrain status --profile "$PROFILE" > "$OUT/status.json" 2>&1 || true
ls -la "$OUT"
echo "total $(( $(date +%s) - T0 )) s"
