#!/bin/sh
# Email-client support of the rendered seed digest, measured with doiuse-email
# (the caniemail.com data): error and warning counts per client, and which CSS
# features cause the errors.
#
# Usage: bench/email_clients.sh [FILE.html]   (default: render the seed digest)
#
# Needs node and the npm package doiuse-email, e.g.
#   mkdir -p /tmp/doiuse && (cd /tmp/doiuse && npm install doiuse-email)
#   DOIUSE_EMAIL=/tmp/doiuse/node_modules/doiuse-email bench/email_clients.sh
# CLIENTS (default "gmail.* outlook.* apple-mail.*") takes doiuse-email globs;
# CLIENTS='*' checks every client it knows.
set -euf  # -f: client globs are not file names

here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
[ -x "$python" ] || python=python3
doiuse=${DOIUSE_EMAIL:-$here/node_modules/doiuse-email}
if ! command -v node >/dev/null 2>&1; then
    echo "email_clients: node is not installed" >&2
    exit 2
fi
if [ ! -f "$doiuse/bin/cli.js" ]; then
    echo "email_clients: no doiuse-email at $doiuse (set DOIUSE_EMAIL; npm install doiuse-email)" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ $# -ge 1 ]; then
    html=$1
else
    html=$work/digest.html
    export DIGEST_DATA_DIR="$work/data"
    unset DIGEST_CONFIG DIGEST_DATABASE_URL || true
    "$python" -m digest ingest "$here/seeds" >/dev/null
    "$python" -m digest preview --topic diffusion --topic '*' --format html --out "$html" >/dev/null
fi

printf '%-26s %6s %8s  %s\n' client errors warnings 'error features'
for glob in ${CLIENTS:-gmail.* outlook.* apple-mail.*}; do
    for client in $(node --input-type=module -e "
import { getEmailClientsFromOptions } from '$doiuse/utils/email-clients.js';
console.log(getEmailClientsFromOptions({ emailClients: ['$glob'] }).join(' '));
"); do
        node "$doiuse/bin/cli.js" -e "$client" "$html" >"$work/out.json"
        "$python" - "$client" "$work/out.json" <<'PY' | tee -a "$work/rows"
import json, re, sys
client, path = sys.argv[1], sys.argv[2]
result = json.load(open(path, encoding="utf-8"))
errors = result.get("errors", [])
features = sorted({re.match(r"`([^`]*)`", e).group(1) for e in errors if e.startswith("`")})
print(f"{client:<26} {len(errors):>6} {len(result.get('warnings', [])):>8}  {', '.join(features)}")
PY
    done
done

# Per family: the range of error counts over its clients.
echo
awk '{ split($1, part, "."); family = part[1] ".*"
       if (!(family in low)) { order[++n] = family; low[family] = $2; high[family] = $2 }
       if ($2 < low[family]) low[family] = $2
       if ($2 > high[family]) high[family] = $2 }
     END { for (i = 1; i <= n; i++) { f = order[i]
           range = (low[f] == high[f]) ? low[f] : low[f] "-" high[f]
           printf "%-26s %6s errors\n", f, range } }' "$work/rows"
