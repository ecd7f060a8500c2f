# session-authority: build with `docker build -t session-authority .`
# Run with DATABASE_URL set, or without it to use the embedded Postgres kept in /data.

# --- production dependencies only (cached until package*.json change) ------------------
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY scripts/patch-postgres.mjs ./scripts/
# No runtime dependency needs an install script; skipping them keeps the layer reproducible.
# Ours (a fix to the Postgres driver, see the script) runs explicitly.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && node scripts/patch-postgres.mjs

# --- compile TypeScript ---------------------------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
COPY scripts/patch-postgres.mjs ./scripts/
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# --- runtime --------------------------------------------------------------------------
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/data
WORKDIR /app

# The embedded Postgres (used when DATABASE_URL is unset) writes to DATA_DIR.
RUN mkdir -p /data && chown node:node /data

COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# migrations/ is read at runtime (relative to dist/db/migrate.js); openapi.yaml is optional,
# the bracket glob lets the build succeed before the file is generated.
COPY package.json openapi.yam[l] ./
COPY migrations ./migrations
# The <session-devices> element, served as it is (src/routes/widget.ts reads it at start).
COPY widget/session-devices.js ./widget/

USER node
VOLUME ["/data"]
EXPOSE 8080

# No curl in the slim image: probe /healthz with node itself; healthy only on 200.
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "const r=require('http').get('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz',s=>process.exit(s.statusCode===200?0:1));r.on('error',()=>process.exit(1));r.setTimeout(2500,()=>r.destroy())"]

# node directly (not npm) so SIGTERM reaches the service, which closes gracefully.
CMD ["node", "dist/cli.js", "serve"]
