#!/usr/bin/env bash
# Installs what bench/ needs when it is missing: Debian packages (wrk, h2load,
# nginx, haproxy) and the load engine and proxies built from tools/ (each its
# own Go module, so their dependencies stay out of the main go.mod). Builds are
# cached in tools/*/bin/ (gitignored) and redone only when their module changed.
#
# Nothing here fails the run: a package that cannot be installed or a tool that
# does not build is reported, and bench reports its rows as not run.
#
# CADDY_BUILD_TIMEOUT=SECONDS bounds Caddy's first build (bench-smoke); when it
# runs out, Caddy is skipped this time and the Go build cache keeps the work
# done, so a later run finishes it.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pair in wrk:wrk h2load:nghttp2-client nginx:nginx haproxy:haproxy; do
	command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
	echo "bench: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
		echo "bench: could not install ${missing[*]}; their rows are reported as not run" >&2
	fi
fi

# build DIR OUT PKG [TIMEOUT]: go build PKG in module DIR into DIR/bin/OUT
# unless the binary is newer than every file of the module.
build() {
	local dir=$1 out=$2 pkg=$3 limit=${4:-0}
	local bin="$dir/bin/$out"
	if [[ -x $bin ]] && [[ -z $(find "$dir" -maxdepth 1 -type f -newer "$bin" -print -quit) ]]; then
		return 0
	fi
	mkdir -p "$dir/bin"
	echo "bench: building $bin" >&2
	local cmd=(go build -trimpath -o "bin/.$out.tmp" "$pkg")
	if ((limit > 0)); then
		cmd=(timeout "$limit" "${cmd[@]}")
	fi
	if (cd "$dir" && "${cmd[@]}"); then
		mv "$dir/bin/.$out.tmp" "$bin"
	else
		rm -f "$dir/bin/.$out.tmp"
		return 1
	fi
}

if ! build tools/fortio fortioload .; then
	echo "bench: fortioload not built; the fixed-rate workloads are reported as not run" >&2
fi
if ! build tools/caddy caddy github.com/caddyserver/caddy/v2/cmd/caddy "${CADDY_BUILD_TIMEOUT:-0}"; then
	echo "bench: caddy not built (yet); it is skipped this run" >&2
fi
