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

# What the end-to-end tests drive besides the servers: a real browser for the Swagger UI page and
# an independent OpenAPI validator.
ensure_test_tools() {
  ensure_packages chromium=chromium python3=python3
  python3 -m pip --version >/dev/null 2>&1 || ensure_packages /usr/lib/python3/dist-packages/pip=python3-pip
  if ! python3 -c "import openapi_spec_validator" >/dev/null 2>&1; then
    echo "installing with pip: openapi-spec-validator" >&2
    python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator 2>/dev/null ||
      python3 -m pip install --quiet --disable-pip-version-check --break-system-packages openapi-spec-validator
  fi
}
