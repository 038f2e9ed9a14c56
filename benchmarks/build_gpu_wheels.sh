#!/usr/bin/env bash
# Build `.whl/`: the wheels that benchmarks/distributed_check.py needs on the GPU machine (Python 3.12, x86-64, no
# network) beyond what its image already has (torch, accelerate, peft, tokenizers, safetensors, numpy, pandas, pyarrow,
# psutil, msgpack, ninja, py-cpuinfo, einops, nvidia-ml-py, tqdm, ... see docs/scaling.md). Run it here, on a CPU
# machine with PyPI access, from the repository root, in a Python environment that has torch (the project's .venv):
#
#   bash benchmarks/build_gpu_wheels.sh            # -> .whl/ (and `/.whl/` added to .git/info/exclude)
#   bash benchmarks/build_gpu_wheels.sh /tmp/whl   # elsewhere (nothing added to .git/info/exclude)
#
# Versions: the ones this project's CI runs (trl, transformers, peft, datasets: pinned here so that the GPU run tests
# the same code as CI; the image's transformers 5.17 is shadowed by the carried 5.24), and DeepSpeed 0.19.8 (the
# newest release; accelerate 1.15 needs >= 0.16.4 for its DeepSpeed paths, transformers >= 0.9.3).
#
# DeepSpeed publishes only an sdist. It is built here with every CUDA/C++ op disabled (DS_BUILD_OPS=0), so the wheel
# is pure Python (py3-none-any, no compiled extension) and any op DeepSpeed needs at run time is JIT-compiled there
# with the image's nvcc and ninja. ZeRO-2/3 with the Trainer's torch AdamW and no offload needs none. The build must
# see torch (DeepSpeed's setup.py imports it), hence --no-build-isolation.
set -euo pipefail

OUT_DIR="${1:-.whl}"
PY="${PYTHON:-python}"
DEEPSPEED_VERSION="${DEEPSPEED_VERSION:-0.19.8}"
# The packages missing from the GPU image (or pinned to CI's versions), with the dependencies the image lacks.
PURE=(
    "trl==1.16.0" "transformers==5.24.0" "peft==0.21.2" "datasets==5.2.0" "dill==0.4.1" "multiprocess==0.70.19"
    "hjson==3.1.0" "pydantic==2.14.4" "annotated-types==0.8.0" "typing-inspection==0.4.5"
)
# More pins, e.g. EXTRA_WHEELS="pyarrow==26.0.1" if the preflight of distributed_check.py reports an old pyarrow there.
read -r -a EXTRA <<<"${EXTRA_WHEELS:-}"
mkdir -p "$OUT_DIR"
if [ "$OUT_DIR" = ".whl" ] && git rev-parse --git-dir >/dev/null 2>&1; then
    exclude="$(git rev-parse --git-path info/exclude)"
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "/.whl/" "$exclude" 2>/dev/null || echo "/.whl/" >>"$exclude"
fi

"$PY" -c "import torch" || { echo "error: $PY cannot import torch (DeepSpeed's build needs it)" >&2; exit 1; }

# 1. DeepSpeed: wheel from the sdist, no compiled ops.
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation "deepspeed==$DEEPSPEED_VERSION" -w "$OUT_DIR"
ds_wheel="$(ls "$OUT_DIR"/deepspeed-"$DEEPSPEED_VERSION"-*.whl)"
case "$ds_wheel" in *-py3-none-any.whl) ;; *) echo "error: $ds_wheel is not a pure-Python wheel" >&2; exit 1 ;; esac
if "$PY" -m zipfile -l "$ds_wheel" | grep -E '\.(so|pyd)[[:space:]]'; then
    echo "error: $ds_wheel holds compiled extensions" >&2
    exit 1
fi

# 2. Wheels published for Python 3.12 on manylinux x86-64 (the GPU machine), as the device README downloads them.
PLATFORMS=(
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64
)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
    -d "$OUT_DIR" "${PURE[@]}" "${EXTRA[@]}"
# pydantic-core: the version this pydantic pins, compiled for CPython 3.12.
core_version="$("$PY" - "$(ls "$OUT_DIR"/pydantic-2*.whl)" <<'PYEOF'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    print(re.search(r"^Requires-Dist: pydantic-core==([^ ;\n]+)", wheel.read(metadata).decode(), re.M).group(1))
PYEOF
)"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
    -d "$OUT_DIR" "pydantic-core==$core_version"

ls -l "$OUT_DIR"
du -sh "$OUT_DIR"
