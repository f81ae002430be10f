# The web UI's browser code from npm (service/web/package-lock.json); Node stays in this stage only.
FROM node:20-slim AS web
WORKDIR /web
COPY service/web/package.json service/web/package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim

# libmagic for type sniffing; PostgreSQL client tools for `chunkd backup` / `restore`.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmagic1 postgresql-client \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY --from=web /web/node_modules ./service/web/node_modules
COPY sql ./sql
RUN pip install --no-cache-dir .

RUN useradd --system --create-home --uid 10001 chunkd \
 && mkdir -p /data/storage && chown chunkd /data/storage
USER chunkd
ENV HOST=0.0.0.0 PORT=8080 STORAGE_DIR=/data/storage
VOLUME /data/storage
EXPOSE 8080
# DATABASE_URL and JWT_SECRET come from the environment: containers use an external PostgreSQL.
CMD ["chunkd", "serve"]
