#!/usr/bin/env bash
# The TOFU GPU run in one call (< 10 min on one H100/H200): the `gpu` pipeline preset on forget10
# (GA, GA+RT, NPO, NPO+RT), result logs, fine-tuning tokens/s and MFU, NPO/GA step-time ratio,
# peak memory with the cached reference, evaluation items/s. See benchmarks/gpu_tofu.py.
#
#   bash benchmarks/gpu_tofu.sh [--quick] [--out DIR] [--data-dir DIR] [--archive] [-- PIPELINE FLAGS]
#
# On a machine without TOFU beside the checkout (the device machine), copy the data into the
# ignored folder .tofu first and carry it:  mkdir -p .tofu && cp ../shared/tofu/*.json* .tofu/
# The GPU image lacks rouge-score (and its dependency nltk): build the wheels once into the ignored
# .whl folder (pip wheel --no-deps -w .whl rouge-score==0.1.2 nltk) and carry .whl; this script
# installs them into /tmp/site when rouge_score is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg TQDM_DISABLE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || PY=python
if ! "$PY" -c "import rouge_score" 2>/dev/null; then
    if compgen -G ".whl/rouge_score-*.whl" >/dev/null && compgen -G ".whl/nltk-*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/rouge_score-*.whl .whl/nltk-*.whl
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "error: rouge_score is not installed; pip install rouge-score, or put its wheels in .whl/ (see the header of $0)" >&2
        exit 2
    fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec "$PY" benchmarks/gpu_tofu.py "$@"
