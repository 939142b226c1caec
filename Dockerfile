# One image for every role: `commons-users api | consumer | migrate` (see helm/commons-users).

FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src

# The pinned dependencies, in a layer that code changes leave cached.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt

# The package as a wheel (the code and its SQL migrations, nothing else), installed into the venv.
COPY README.md ./
COPY core/ core/
COPY service/ service/
COPY consumers/ consumers/
COPY sql/ sql/
RUN pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && pip install --no-deps /tmp/wheels/commons_users-*.whl


FROM python:3.11-slim-bookworm

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=builder /opt/venv /opt/venv

# Numeric, so that Kubernetes can verify runAsNonRoot; nothing in the image is writable by it.
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["commons-users"]
CMD ["api", "--host", "0.0.0.0", "--port", "8080"]
