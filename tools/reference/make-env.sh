#!/usr/bin/env bash
# Makes .reference-venv with the pinned reference implementations (tools/reference/
# requirements.txt) from the Python Package Index. Run by hand before regenerating reference
# data; CI and the README's two commands never need it.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m venv .reference-venv
.reference-venv/bin/pip install --quiet --upgrade pip
.reference-venv/bin/pip install --quiet -r tools/reference/requirements.txt
# sae-lens pins transformer-lens < 4: its SAE classes come without its dependencies (the SAE
# script imports them through shims, tools/reference/make_sae_references.py).
.reference-venv/bin/pip install --quiet --no-deps -r tools/reference/requirements-sae.txt
.reference-venv/bin/python -c "from importlib.metadata import version as v; print(*(f\"{p} {v(p)}\" for p in (\"torch\", \"transformers\", \"transformer-lens\", \"sae-lens\")))"
