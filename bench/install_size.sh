#!/bin/bash
# Venv size and install time of the runtime install (`pip install pg_mmretrieval`, what
# `make demo` installs) against the dev+export install (`make test`), one after the other in
# fresh venvs under $TMPDIR, with the same pip cache; prints one line each and the ratios.
#   bash bench/install_size.sh
set -u
cd "$(dirname "$0")/.."
tmp=${TMPDIR:-/tmp}
declare -A secs size
for kind in runtime full; do
  d="$tmp/mmr-venv-$kind"; rm -rf "$d"
  start=$(date +%s.%N)
  python3 -m venv "$d" && "$d/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1
  if [ "$kind" = runtime ]; then spec=.; else spec='.[dev,export]'; fi
  "$d/bin/python" -m pip install -q -e "$spec" >/dev/null 2>&1 || { echo "$kind: install failed"; exit 1; }
  secs[$kind]=$(echo "$(date +%s.%N) - $start" | bc)
  size[$kind]=$(du -sm "$d" | cut -f1)
  torch=$("$d/bin/python" -c 'import importlib.util as u; print(bool(u.find_spec("torch")))')
  echo "$kind: ${secs[$kind]} s, ${size[$kind]} MB, torch installed: $torch"
  rm -rf "$d"
done
echo "runtime / full: time $(echo "scale=2; ${secs[runtime]} / ${secs[full]}" | bc), size $(echo "scale=2; ${size[runtime]} / ${size[full]}" | bc)"
