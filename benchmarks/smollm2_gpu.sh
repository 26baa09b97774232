#!/usr/bin/env bash
# SmolLM2-135M on one H100/H200 (issue I.7), <= 8 minutes on the device: the one command to run there.
#   1. the step section (JAX only): tokens/s and MFU of the sparse post-training step (train.attention=pallas)
#      against the dense step with cuDNN attention; LoRA r16 and full fine-tuning; T = 64, 1024, 4096.
#   2. the kernel section (JAX + torch in one process): fwd+bwd of one attention layer at SmolLM2's head shape,
#      sparsejax's Pallas kernel vs the authors' Helion kernel vs torch SDPA vs cuDNN; T = 1024, 4096, 8192.
# Each section has a hard limit here (timeout) and a soft budget inside (rows that would not fit are listed as
# skipped); tables go to $OUT as they are measured: smollm2_gpu_{step,kernel}.{md,json,log}, smollm2_gpu_env.txt.
#
# Prepare, on the development machine, in the repository root (the wheel and the authors' source travel in the
# ignored folder .whl/, 4.8 MB together; nothing else is needed: random weights of the SmolLM2 shape, see the
# docstring of benchmarks/smollm2_gpu.py for why the 98 MB GGUF does not travel):
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl helion==1.5.1     # pure Python, 4.7 MB
#   rm -rf .whl/splash_attention && cp -r ../shared/anchors/splash_attention .whl/splash_attention
# helion's requirements, all on the device image: torch, triton, numpy, psutil, rich, scikit-learn,
# typing-extensions (filecheck is listed too, but only its tests import it).
# Then one device call:   run(command="bash benchmarks/smollm2_gpu.sh", carry=[".whl"], timeout_s=540)
# A second call while the machine is warm should rerun faster: helion's autotuning and JAX's compilations are cached
# under /tmp. Smoke test on a CPU (tiny sizes, Pallas in interpret mode, ~3 min):
#   PY=.venv/bin/python bash benchmarks/smollm2_gpu.sh --smoke
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/smollm2_gpu}"
mkdir -p "$out"
PY="${PY:-python3}"
smoke=()
total=465            # seconds for both sections (+ ~10 s of install and version listing)
if [ "${1:-}" = "--smoke" ]; then smoke=(--smoke); total=420; fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=/tmp/smollm2_gpu_jax_cache HELION_AUTOTUNE_PROGRESS_BAR=0
start=$SECONDS

# the authors' kernel: helion from the carried wheel (into its own target dir: no dependency is touched), their
# source from the carried copy (else ../shared/anchors, where this checkout has it)
site=/tmp/smollm2_gpu_site
wheel=$(ls .whl/helion-*.whl 2>/dev/null | tail -n 1)
if [ -n "$wheel" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheel" \
    && export PYTHONPATH="$PYTHONPATH:$site" || echo "# helion wheel did not install: the Helion rows will say why"
else
  echo "# no .whl/helion-*.whl: the Helion rows will say why (see the preparation above)"
fi

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 || true
  "$PY" - <<'EOF' 2>&1
import importlib, importlib.metadata, platform
print("python", platform.python_version(), platform.machine())
for m, dist in (("jax", "jax"), ("jaxlib", "jaxlib"), ("flax", "flax"), ("optax", "optax"),
                ("orbax.checkpoint", "orbax-checkpoint"), ("torch", "torch"), ("triton", "triton"),
                ("helion", "helion")):
    try:
        mod = importlib.import_module(m)
        try:
            v = importlib.metadata.version(dist)
        except Exception:
            v = getattr(mod, "__version__", "?")
        print(m, v, getattr(mod, "__file__", ""))
    except Exception as e:
        print(m, "not importable:", type(e).__name__, str(e)[:200])
import jax
print("devices", jax.devices())
EOF
} | tee "$out/smollm2_gpu_env.txt"

limit_a=$(( total * 56 / 100 ))   # 260 s on the device
XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout -k 10 "$limit_a" "$PY" benchmarks/smollm2_gpu.py --section step \
  --budget $(( limit_a - 25 )) --out "$out" "${smoke[@]}" 2>&1 | tee "$out/smollm2_gpu_step.log"
echo "# step section: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"

limit_b=$(( total - (SECONDS - start) ))
[ "$limit_b" -lt 60 ] && limit_b=60
XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 timeout -k 10 "$limit_b" "$PY" benchmarks/smollm2_gpu.py --section kernel \
  --budget $(( limit_b - 25 )) --out "$out" "${smoke[@]}" 2>&1 | tee "$out/smollm2_gpu_kernel.log"
echo "# kernel section: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
