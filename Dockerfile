# syntax=docker/dockerfile:1
# One image for every Node process of the saga: the production build (`npm run build`), one bundled
# ES module per process with its dependencies inside, run by plain `node`. No node_modules, no loader,
# nothing transpiled at start-up. The command names the process, as compose.yaml does, and PORT the port
# it listens on, which the health check asks:
#   docker build -t outbox-saga/node:local .
#   docker run -e PORT=8080 outbox-saga/node:local dist/bin/gateway.mjs
ARG NODE_IMAGE=node:24.22.3-bookworm-slim

# Only the manifests, so that the dependency layer below is rebuilt when one of them changes and not
# when a source file does; found by name, so a new workspace needs no change here.
FROM ${NODE_IMAGE} AS manifests
WORKDIR /app
COPY . .
RUN find . -type f ! -name package.json ! -name package-lock.json -delete && find . -type d -empty -delete

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY --from=manifests /app ./
# The build needs the dev dependencies (esbuild); none of them reaches the final image.
RUN npm ci --include=dev --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build

FROM ${NODE_IMAGE}
WORKDIR /app
# Every dependency is inside the bundles: nothing to install.
COPY --from=build /app/dist ./dist
ENV NODE_ENV=production
USER node
EXPOSE 8080 8081 8082 8091 9400 9401
# Every process serves /ready on $PORT, which the image does not set: each process has its own default
# (gateway 8080, user-service 8081, order-service 8091, relay 9400), and the check cannot know which runs.
# Without PORT the check fails and says so. compose.yaml uses the same check.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=12 \
  CMD ["node", "-e", "const port = process.env.PORT; if (!port) { console.error('PORT is not set: this health check asks /ready on the port in PORT; set it to the port the process listens on, as compose.yaml does'); process.exit(1); } fetch('http://127.0.0.1:' + port + '/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "--enable-source-maps"]
CMD ["dist/bin/gateway.mjs"]
