# One image for all four Switchboard services. Which service a container runs is chosen by its
# command, e.g. `python -m services.routing`; the default below runs intake.
#
#   docker build -t switchboard .
#   docker run --rm -e SWITCHBOARD_API_KEYS=... -e HTTP_PORT=8002 switchboard python -m services.routing
#
# Configuration is by environment variables only (see shared/settings.py and docker-compose.yml).
FROM python:3.11-slim

# uv installs exactly what uv.lock pins; the version matches the dev dependency in pyproject.toml.
# UV_PYTHON_DOWNLOADS=never: use the image's Python, never fetch another one at build time.
# UV_NO_CACHE=1: keep uv's download cache out of the image layers.
# UV_COMPILE_BYTECODE=1: compile .pyc at build time, so containers start faster and need no
# write access to the code.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PYTHONDONTWRITEBYTECODE=1

RUN pip install --no-cache-dir uv==0.13.8

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when the lock changes, not on every
# code change. README.md is here because pyproject.toml names it as the project's readme.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the code, and the project itself into the same virtualenv.
COPY shared/ ./shared/
COPY services/ ./services/
RUN uv sync --frozen --no-dev

# Run unprivileged. A numeric USER lets Kubernetes `runAsNonRoot` verify it without /etc/passwd.
# The code stays owned by root, so the running service cannot modify it.
RUN groupadd --gid 10001 switchboard \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin switchboard
USER 10001:10001

# HTTP_HOST=0.0.0.0: the settings default is 127.0.0.1, which nothing outside the container reaches.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HTTP_HOST=0.0.0.0

# Documentation only: intake, routing, sla and notify listen on these by default in compose.
EXPOSE 8001 8002 8003 8004

CMD ["python", "-m", "services.intake"]
