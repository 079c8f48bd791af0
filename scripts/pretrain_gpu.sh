#!/usr/bin/env bash
# Pretrain the cpu profile's prior zoo on one CUDA GPU and return the shipped files.
#
# For a lent accelerator (an H200 for about 15 minutes): run from the repository root,
#     bash scripts/pretrain_gpu.sh            # OUT=$OUT (the device tool's return folder)
# It installs the pinned environment if needed, renders the pretraining faces on the CPU cores,
# trains the four networks of drdpgan/pretrain.py at once on the GPU (each recipe unchanged, every
# random number still drawn on the CPU, so the schedule is the CPU run's), exports each finished
# network (fp16, manifest with provenance naming the GPU), and copies drdpgan/weights/ to $OUT
# (at most 8 files of 16 MiB come back). A network that is not finished by the deadline keeps its
# resumable folder under artifacts/pretrain/cpu/ and is not exported.
#
# Status: written and its CPU path tested; not yet run on a GPU (no device was lent to the session
# that wrote it). The CPU path (`make pretrain`) is the default and reaches the same recipes.
set -euo pipefail
OUT="${OUT:-out}"
DEADLINE="${DEADLINE:-480}"   # seconds of training before the exports start
PROFILE="${PROFILE:-cpu}"
mkdir -p "$OUT" artifacts/logs

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q -r requirements.txt
    .venv/bin/python -m pip install -q --no-deps facenet-pytorch==2.6.0
    .venv/bin/python -m pip install -q --no-deps -e .
fi
PY=.venv/bin/python
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
# shipped weights need their provenance: a git checkout at a commit, with the package unmodified
git rev-parse HEAD >/dev/null 2>&1 || { echo "not a git checkout: the exports would be refused" >&2; exit 2; }
[ -z "$(git status --porcelain -- drdpgan ':!drdpgan/weights' pyproject.toml requirements.txt)" ] || {
    echo "uncommitted changes in the package: the exports would be refused" >&2; exit 2; }

# the faces (CPU, all cores), then the four trainings side by side on the one GPU
$PY -c "from drdpgan.pretrain import pretraining_faces; pretraining_faces('$PROFILE', progress=False)"
pids=()
for net in identity prior3d evaluator stylegan2; do
    timeout "$DEADLINE" $PY -m drdpgan.pretrain "$net" --profile "$PROFILE" --device cuda --quiet \
        > "artifacts/logs/pretrain_$net.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done

for net in identity prior3d evaluator stylegan2; do
    if [ "$net" = stylegan2 ]; then
        # finalize the StyleGAN2 run at the step it reached (writes stylegan2.pt)
        step=$($PY -c "from drdpgan.runlog import latest_checkpoint; from drdpgan.pretrain import work_dir; c=latest_checkpoint(work_dir('$PROFILE','stylegan2')); print(int(c.stem.split('_')[-1]) if c else 0)")
        [ "$step" -gt 0 ] && $PY -m drdpgan.pretrain stylegan2 --profile "$PROFILE" --steps "$step" --quiet >> artifacts/logs/pretrain_stylegan2.log 2>&1 || true
    fi
    $PY -m drdpgan.pretrain export --network "$net" --profile "$PROFILE" >> "artifacts/logs/export_$net.log" 2>&1 || echo "not exported: $net"
done
cp -r drdpgan/weights "$OUT/" 2>/dev/null || true
cp artifacts/logs/*.log "$OUT/" 2>/dev/null || true
$PY -m drdpgan.pretrain status --profile "$PROFILE" | tee "$OUT/status.json"
