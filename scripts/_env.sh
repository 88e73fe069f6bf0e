# Shared by scripts/up and scripts/test: a virtual environment in .venv with the project
# installed (editable). Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"

ensure_venv() {
    local extras="$1" stamp="$VENV/.seqbridge-installed${1:+-$1}"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating virtual environment in .venv" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "==> installing Seqbridge${extras:+ with [$extras]} (first run takes a minute)" >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"
        touch "$stamp"
    fi
}
