# syntax=docker/dockerfile:1
# One image for every Node process of the saga. Node 24 runs the TypeScript sources itself (type
# stripping: no loader, no build step, nothing transpiled at start-up), with production dependencies only.
# The command names the entry point, as compose.yaml does:
#   docker build -t outbox-saga/node:local .
#   docker run outbox-saga/node:local services/gateway/src/main.ts
ARG NODE_IMAGE=node:24.22.3-bookworm-slim

# Only the manifests, so that the dependency layer below is rebuilt when one of them changes and not
# when a source file does; found by name, so a new workspace needs no change here.
FROM ${NODE_IMAGE} AS manifests
WORKDIR /app
COPY . .
RUN find . -type f ! -name package.json ! -name package-lock.json -delete && find . -type d -empty -delete

FROM ${NODE_IMAGE}
WORKDIR /app
COPY --from=manifests /app ./
# No dev dependencies and no install scripts: nothing we run needs a native build.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
# Sources only: tests, benchmarks and tools stay out of the image (.dockerignore).
COPY . .
ENV NODE_ENV=production
USER node
EXPOSE 8080 8081 8082 8091 9400 9401
# Every process serves /ready on $PORT; compose.yaml uses the same check.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=12 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + process.env.PORT + '/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node"]
CMD ["services/gateway/src/main.ts"]
