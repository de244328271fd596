# ScaiMind gateway (+ embedded reference coordinator unless SCAIMIND_GRPC_HOST is set).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SCAIMIND_DATA_DIR=/data

# bubblewrap is the job sandbox (util-linux, already in the image, brings prlimit and setpriv).
# It needs user namespaces: run the container with a seccomp profile that allows them (see the
# README's Docker section); without them CUSTOM jobs are refused and built-in ones run unsandboxed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 scaimind \
 && useradd --system --uid 10001 --gid scaimind --home-dir /app --shell /usr/sbin/nologin scaimind \
 && mkdir -p /app /data \
 && chown scaimind:scaimind /data

WORKDIR /app

# Dependencies first, from pyproject alone, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The code: the package, its migrations and the protocol. The wheel built here carries the
# migrations inside the package (scaimind/_alembic), where `scaimind migrate` finds them;
# alembic/ and alembic.ini stay in /app for running the alembic CLI by hand.
COPY src ./src
COPY alembic ./alembic
COPY alembic.ini ./
COPY protos ./protos
RUN pip install --no-deps . \
 && cd / && python -c "import scaimind.gateway.db.migrate as m, scaimind.gateway.app; print(m.script_location())"

USER scaimind
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status == 200 else 1)"]

CMD ["scaimind", "serve", "--host", "0.0.0.0", "--port", "8080"]
