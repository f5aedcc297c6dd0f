# One image for the gateway service and the device simulator:
#   docker run IMAGE                                   -> node dist/main.js (the service)
#   docker run IMAGE node dist/simulator/main.js       -> the simulator
# The code targets Node 20+; the image runs the current LTS.
ARG NODE_IMAGE=node:22-bookworm-slim

# --- build: all dependencies, compile TypeScript ---------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# Only the service's compile: `npm run build` also regenerates web/protocol.js, which is committed
# and served by nginx from its mount, and whose tsconfig is not in this build context.
RUN npx tsc -p tsconfig.build.json

# --- production: runtime dependencies and dist/ only -----------------------------------
FROM ${NODE_IMAGE} AS production
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
# Owned by root and not writable by the `node` user: the process cannot modify its own code.
COPY --from=build /app/dist ./dist
# The mount points of compose's named volumes: `access` (users file, session secret, written by
# the `users` step) and `simulator-credentials` (written by the `devices` step). A new named volume
# takes its owner and mode from the image's directory: the node user may write, no one else read.
RUN mkdir -p /var/lib/mqtt-sse-gateway/access /var/lib/mqtt-sse-gateway/credentials \
  && chown node:node /var/lib/mqtt-sse-gateway/access && chmod 0700 /var/lib/mqtt-sse-gateway/access \
  && chown node:node /var/lib/mqtt-sse-gateway/credentials && chmod 0700 /var/lib/mqtt-sse-gateway/credentials
# Mount points of the certificate generator's volumes (docker-compose.yml, `certs`): a new named
# volume takes this owner, so the generator, running as node, can write its files there.
RUN mkdir -p /tls/server /tls/ca && chown node:node /tls/server /tls/ca && chmod 0700 /tls/server /tls/ca
# The mount point of the `app-socket` volume (nginx connects to the app's socket there): the
# node user creates the socket; others may pass through the directory, not list it.
RUN mkdir -p /var/lib/mqtt-sse-gateway/socket && chown node:node /var/lib/mqtt-sse-gateway/socket && chmod 0711 /var/lib/mqtt-sse-gateway/socket
USER node
EXPOSE 3000
# No HEALTHCHECK here: the same image also runs the simulator, which serves no HTTP.
# docker-compose.yml gives each service its own (the service's: GET /readyz).
# node directly, not npm: signals (SIGTERM -> drain) reach the process, and no npm in the way.
CMD ["node", "dist/main.js"]
