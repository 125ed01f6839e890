#!/usr/bin/env bash
# Here, on the CPU machine, before a device call: fill .gpu/ (in .gitignore) with what the device lacks.
#   .gpu/wheels/     gymnasium, stable-baselines3, sb3-contrib, vaderSentiment, chatterbot-corpus and their missing
#                    dependencies, as Python 3.12 manylinux wheels (the device has torch, transformers, numpy, pyyaml)
#   .gpu/tokenizer/  the default model's tokenizer folder (PROXY_ENV_TOKENIZER on the device)
# Then: the device tool's run with carry [".gpu"] and command "bash benchmarks/gpu/run.sh" (see run.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
mkdir -p .gpu/wheels
for pkg in gymnasium==1.4.0 farama-notifications==0.0.4 stable-baselines3==2.9.2 sb3-contrib==2.9.2 \
           vadersentiment==3.3.2 chatterbot-corpus==1.3.3; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .gpu/wheels "$pkg" || "$PY" -m pip download -q --no-deps --no-binary=:none: -d .gpu/wheels "$pkg"
done
rm -rf .gpu/tokenizer
cp -r "$("$PY" -c 'from proxy_env.assets import default_tokenizer_dir; print(default_tokenizer_dir())')" .gpu/tokenizer
du -sh .gpu/wheels .gpu/tokenizer
ls .gpu/wheels
