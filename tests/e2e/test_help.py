"""--help everywhere, generated from the flag tables that parse the flags: every command of lensd
and lensctl lists each flag with a meaning (and its default), and every flag the README's tables
name exists."""
import re
import subprocess

import pytest

from conftest import LENSCTL, LENSD, ROOT

COMMANDS = [(LENSD, c) for c in ("serve", "run", "generate")] + \
           [(LENSCTL, c) for c in ("generate", "cache", "info", "tokenize", "health", "sweep")]


def help_flags(binary, command, flag="--help"):
    r = subprocess.run([binary, command, flag], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: "), r.stdout
    flags = {}
    for line in r.stdout.splitlines():
        m = re.match(r"  --([a-z0-9-]+)( VALUE)?\s+(.*)$", line)
        if m:
            flags[m.group(1)] = m.group(3)
    assert flags, r.stdout
    return flags


@pytest.mark.parametrize("binary,command", COMMANDS)
def test_every_flag_has_help(binary, command):
    for name, text in help_flags(binary, command).items():
        assert len(text) > 10, f"{command} --{name} has no meaning: {text!r}"


def test_short_forms_and_defaults():
    assert help_flags(LENSD, "serve", "-h")["port"].endswith("(default: 50051)")
    assert help_flags(LENSCTL, "sweep", "-h")["metric"].endswith("(default: kl)")
    for binary in (LENSD, LENSCTL):
        r = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.startswith("usage: "), r.stdout + r.stderr


def test_every_flag_in_the_readme_tables_exists():
    known = set()
    for binary, command in COMMANDS:
        known |= set(help_flags(binary, command))
    table_rows = [line for line in (ROOT / "README.md").read_text().splitlines()
                  if line.startswith("|")]
    named = {m for line in table_rows for m in re.findall(r"`--([a-z0-9-]+)", line)}
    assert named, "no flags found in the README's tables"
    assert named <= known, f"README tables name unknown flags: {sorted(named - known)}"
