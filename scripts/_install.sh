# Sourced by scripts/dllm and scripts/test: install what the project needs, and say so.
#
#   project_sync ROOT [uv sync options...]
#
# The first run (no uv, no .venv, or uv.lock/pyproject.toml changed since the last install)
# says what it installs and shows uv's own progress, within the first seconds; later runs
# check the environment silently. Everything installed is a prebuilt wheel.

_say() { printf 'dllm: %s\n' "$*" >&2; }

project_sync() {
    local root="$1"
    shift
    if ! command -v uv >/dev/null 2>&1; then
        _say "installing uv, the package manager (first run only)..."
        python3 -m pip install --quiet uv
    fi
    local stamp="$root/.venv/.dllm-installed" want
    want="$(cat "$root/uv.lock" "$root/pyproject.toml" | cksum) $*"
    if [ -f "$stamp" ] && grep -qxF -- "$want" "$stamp"; then
        uv sync --project "$root" --quiet "$@"
        return
    fi
    _say "first run: installing the project and its extras into $root/.venv"
    _say "(prebuilt wheels, llama.cpp included; this takes a minute or so, later runs start at once)"
    local began=$SECONDS
    uv sync --project "$root" "$@"
    printf '%s\n' "$want" >>"$stamp"
    _say "installed in $((SECONDS - began)) s"
}
