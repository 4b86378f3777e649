# The satpipe service: uvicorn serving the model that a mounted checkout's dvc.lock pins.
#
#   docker build -t satpipe .
#   docker run -p 8000:8000 -v "$PWD:/srv/satpipe:ro" satpipe
#
# The image holds the service code (serve/, satpipe/) and its pinned dependencies, never the
# model or data: those come from the checkout mounted at SATPIPE_REPO, after `dvc repro` or
# `dvc pull` (.dockerignore keeps everything else out of the build context). Where no registry
# is reachable, container/base-image.sh makes debian:bookworm-slim from Debian's packages.

# Build stage: the venv, made with python3-venv and pip, which the final image does not carry.
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install --yes --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
# container/requirements.txt: the service's packages without the test, lint and type-check tooling,
# each pinned at requirements.txt's version with its hashes (`make lock`, from
# container/requirements.in). pip installs exactly those files and resolves nothing.
COPY container/requirements.txt /tmp/requirements.txt
# No compiler in the image: every pin with compiled code has a wheel (a pure-Python sdist, e.g.
# antlr4-python3-runtime, builds without one).
# The optional secret `ca_bundle` is a CA bundle for pip behind a TLS-intercepting
# proxy (`--secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt`); a secret is mounted
# for this command only and never stored in a layer.
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --quiet \
        --require-hashes --no-deps -r /tmp/requirements.txt \
 && /opt/venv/bin/python -m pip check --disable-pip-version-check >/dev/null \
 && /opt/venv/bin/python -m pip uninstall --yes --quiet pip

FROM debian:bookworm-slim
# ca-certificates: pygit2 (dvc.api, for SATPIPE_REV) fails at import without a CA store, and DVC
# remotes are reached over TLS. safe.directory: the mounted checkout belongs to another user
# than the service's, which git (and pygit2) otherwise refuse to read a revision from.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin satpipe \
 && printf '[safe]\n\tdirectory = /srv/satpipe\n' > /etc/gitconfig
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY satpipe/ satpipe/
COPY serve/ serve/
# The code is root's and read-only to the service user: compile it now, not at every start.
RUN /opt/venv/bin/python -m compileall -q satpipe serve

# uvicorn reads UVICORN_HOST and UVICORN_PORT (`-e UVICORN_PORT=9000` moves it); the service
# reads SATPIPE_* (see serve/settings.py), and fails at startup on an unknown SATPIPE_ name.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    SATPIPE_REPO=/srv/satpipe \
    UVICORN_HOST=0.0.0.0 \
    UVICORN_PORT=8000
USER satpipe
EXPOSE 8000
# No curl in slim: python asks /health/live (urlopen raises on an error status: exit 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('UVICORN_PORT', '8000'), timeout=4)"]
CMD ["uvicorn", "serve.app:create_app", "--factory"]
