# syntax=docker/dockerfile:1
# One image for every Node process of the saga, run by tsx from the TypeScript sources (no build step).
# The command names the entry point, as compose.yaml does:
#   docker build -t outbox-saga/node:local .
#   docker run outbox-saga/node:local services/gateway/src/main.ts
ARG NODE_IMAGE=node:20.20.2-bookworm-slim

# Only the manifests, so that the dependency layer below is rebuilt when one of them changes and not
# when a source file does; found by name, so a new workspace needs no change here.
FROM ${NODE_IMAGE} AS manifests
WORKDIR /app
COPY . .
RUN find . -type f ! -name package.json ! -name package-lock.json -delete && find . -type d -empty -delete

FROM ${NODE_IMAGE}
WORKDIR /app
COPY --from=manifests /app ./
# Dev dependencies too: tsx runs the processes. No install scripts: nothing we run needs a native build.
RUN npm ci --include=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY . .
ENV NODE_ENV=production
USER node
EXPOSE 8080 8081 8082 8091 9400 9401
ENTRYPOINT ["node", "--import", "tsx"]
CMD ["services/gateway/src/main.ts"]
