# Image for docker-compose.yml: contracts compiled with solc-js, the project installed from pins.
FROM node:20-bookworm-slim AS contracts
WORKDIR /src/contracts
COPY contracts/package.json contracts/package-lock.json ./
RUN npm ci --no-audit --no-fund --omit=optional
COPY contracts/ ./
RUN npm run --silent compile

FROM python:3.12-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY config/ config/
COPY ehr/ ehr/
COPY imaging/ imaging/
COPY ledger/ ledger/
COPY ai_jobs/ ai_jobs/
COPY manage.py ./
RUN pip install --no-cache-dir -c constraints.txt . && useradd --system --home /app carrack \
    && mkdir -p /var/lib/carrack && chown carrack /var/lib/carrack
COPY --from=contracts /src/contracts/build contracts/build
USER carrack
EXPOSE 8000
