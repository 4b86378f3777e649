#!/usr/bin/env bash
# The container smoke test (`make container-smoke`, run by .ci/run): build the service image
# from the Dockerfile and check it serves a real pipeline run.
#
#  1. podman, buildah and debootstrap, installed with apt-get when missing (needs root);
#  2. the debian:bookworm-slim base, made from Debian's packages when no registry has it
#     (container/base-image.sh; skipped when the image exists);
#  3. the image, built from the Dockerfile as it is (`podman build --isolation chroot`);
#  4. a pipeline checkout: a clone of this repository (plus uncommitted changes, for local
#     runs) on which `dvc repro` runs with the project venv;
#  5. container/smoke_check.py run inside the image (`buildah run`, the host's network) with the
#     checkout mounted read-only at SATPIPE_REPO: it starts the image's CMD on 127.0.0.1,
#     waits for /health/ready 200, checks one /infer answer against data/predictions.json and
#     runs the image's HEALTHCHECK; then again with SATPIPE_REV=HEAD (the model read through
#     dvc.api at a git revision of the checkout).
#
# Prints the time of each step and the image size. Environment: IMAGE (satpipe:latest),
# VENV (.venv), KEEP=1 keeps the pipeline checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
image=${IMAGE:-satpipe:latest}
venv=${VENV:-.venv}

step() { printf '\n== container-smoke: %s\n' "$*"; }
timed() { # timed <label> <command...>: run it, then record how long it took
    local label=$1 start=$SECONDS
    shift
    "$@"
    times+=("$(printf '%-10s %4d s' "$label" $((SECONDS - start)))")
}
times=()

# 1. Tools. --isolation chroot builds and runs without a container runtime or user namespaces.
missing=()
for tool in podman buildah debootstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    if [[ $(id -u) != 0 ]]; then
        echo "container-smoke: ${missing[*]} missing; as root: apt-get install podman buildah debootstrap" >&2
        exit 1
    fi
    step "apt-get install ${missing[*]}"
    install_tools() {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends podman buildah debootstrap >/dev/null
    }
    timed apt-get install_tools
fi
[[ -x $venv/bin/dvc ]] || { echo "container-smoke: no $venv/bin/dvc: run make install" >&2; exit 1; }

# 2. + 3. The base, then the image (from scratch on a fresh machine; locally from podman's
# layer cache when container/requirements.txt and the code are unchanged).
step "base image"
timed base bash container/base-image.sh
step "podman build $image"
# docker format: OCI image configs have no HEALTHCHECK. The CA bundle reaches pip as a build
# secret (see the Dockerfile), for hosts behind a TLS-intercepting proxy.
build=(podman build --isolation chroot --format docker --pull=never --tag "$image")
[[ -s /etc/ssl/certs/ca-certificates.crt ]] &&
    build+=(--secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt)
timed build "${build[@]}" .

# 4. The pipeline checkout the container serves.
work=$(mktemp -d "${TMPDIR:-/var/tmp}/satpipe-smoke.XXXXXX")
container=
cleanup() {
    [[ -n $container ]] && buildah rm "$container" >/dev/null
    if [[ ${KEEP:-} == 1 ]]; then echo "container-smoke: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
checkout=$work/satpipe
step "pipeline checkout: clone + dvc repro in $checkout"
make_checkout() {
    git clone --quiet --no-hardlinks "$repo" "$checkout"
    # Local runs serve the working tree's pipeline, as the image holds the working tree's code.
    git diff HEAD --binary | git -C "$checkout" apply --whitespace=nowarn --allow-empty
    git ls-files --others --exclude-standard -z | xargs -0 -r cp --parents -t "$checkout"
    (cd "$checkout" && DVC_NO_ANALYTICS=1 PATH="$repo/$venv/bin:$PATH" dvc repro --quiet)
    # Committed, so that HEAD pins what ran: the second smoke run serves SATPIPE_REV=HEAD.
    git -C "$checkout" add -A
    git -C "$checkout" -c user.name=smoke -c user.email=smoke@example.invalid \
        commit --quiet --allow-empty -m "container smoke: dvc repro"
    # The container's user (uid 10001) only reads the checkout.
    chmod -R a+rX "$work"
}
timed pipeline make_checkout

# 5. The service inside the image, checked from inside the image.
step "smoke test in $image"
cmd=$(podman image inspect --format '{{json .Config.Cmd}}' "$image")
health=$(podman image inspect --format '{{json .Config.Healthcheck.Test}}' "$image")
container=$(buildah from --pull-never "$image")
run_smoke() { # run_smoke [VAR=value...]: extra environment of the service
    buildah run --isolation chroot \
        --volume "$checkout:/srv/satpipe:ro" \
        --volume "$repo/container/smoke_check.py:/tmp/smoke_check.py:ro" \
        "$container" -- env "$@" python /tmp/smoke_check.py "$cmd" "$health"
}
timed smoke run_smoke
# A revision read through dvc.api needs what the image adds for it (CA store, safe.directory).
step "smoke test in $image, SATPIPE_REV=HEAD"
timed smoke-rev run_smoke SATPIPE_REV=HEAD

step "done"
podman image ls "$image"
printf '%s\n' "${times[@]}"
