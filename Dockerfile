# Maxwell: kernel, services and CLI in one image. docker-compose.yml runs it twice: once as the
# one-shot `maxwell-init` (keys + nats-server config), then as the long-running `maxwell up`.
FROM node:20-bookworm-slim

WORKDIR /app

# Dependencies first, so editing the source does not invalidate this layer.
COPY package.json package-lock.json ./
# npm ci needs devDependencies (TypeScript) for the build, so NODE_ENV stays unset until after it.
# If npm ci rejects the lockfile (npm drops optional platform packages it could not fetch),
# install from package.json without rewriting it; the build still fails on a real problem.
RUN npm ci --no-audit --no-fund --loglevel=error \
    || npm install --no-save --no-audit --no-fund --loglevel=error

COPY . .
RUN npm run build

# Mount points owned by the unprivileged user: an empty named volume mounted here takes this
# ownership the first time, so the node user can write keys and the generated server config.
RUN mkdir -p /maxwell /etc/nats \
    && chown node:node /maxwell /etc/nats \
    && chmod 0700 /maxwell

ENV NODE_ENV=production
USER node

CMD ["node", "dist/src/cli/main.js", "--help"]
