# syntax=docker/dockerfile:1
#
# The virt-graph gateway as an image, in two stages:
#   build    compiles the native libvirt addon against libvirt-dev and the
#            TypeScript to dist/, then drops the development dependencies;
#            every step is deploy/build.sh, which deploy/check-dockerfile.sh
#            runs in a clean directory to check this stage without a
#            container engine.
#   runtime  Node.js, libvirt's runtime library (libvirt0, which the addon
#            links), CA certificates and the built files; runs as a non-root
#            user (10001).
#
#   docker build -t virt-graph .
#   docker run --rm -p 4000:4000 -v "$PWD/gateway.yaml:/etc/virt-graph/config.yaml:ro" \
#     -e VIRT_GRAPH_SECRET_KEY virt-graph
#
# See deploy/README.md: configuration, secrets, Kubernetes.

ARG NODE_IMAGE=node:22-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
# Dependencies first: this layer is reused while the lock file stays the same.
COPY package.json package-lock.json ./
COPY deploy/build.sh deploy/build.sh
RUN bash deploy/build.sh deps
COPY . .
RUN bash deploy/build.sh app

FROM ${NODE_IMAGE} AS runtime
RUN apt-get update \
  && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libvirt0 ca-certificates \
  && rm -rf /var/lib/apt/lists/* \
  && groupadd --system --gid 10001 virt-graph \
  && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/virt-graph --no-create-home \
    --shell /usr/sbin/nologin virt-graph \
  && install -d -o 10001 -g 10001 -m 0750 /var/lib/virt-graph /var/lib/virt-graph/state \
  && install -d -m 0755 /etc/virt-graph
# HOST: a container is reached through its network interface, not loopback (a
# config file's server.host is overridden by it; PORT may be set the same way).
# The state directory (tasks, idempotency keys, the audit file) is the
# working directory, so the default state.dir (.state) lands on the volume.
ENV NODE_ENV=production \
  HOST=0.0.0.0 \
  VIRT_GRAPH_CONFIG=/etc/virt-graph/config.yaml \
  HOME=/var/lib/virt-graph
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/schema ./schema
COPY --from=build /src/dist ./dist
COPY --from=build /src/native/libvirt/build/Release/virt_graph_libvirt.node ./native/libvirt/build/Release/virt_graph_libvirt.node
WORKDIR /var/lib/virt-graph
VOLUME ["/var/lib/virt-graph"]
USER 10001:10001
EXPOSE 4000
# For docker run and compose; Kubernetes ignores it and probes /healthz and
# /readyz itself (deploy/kubernetes/40-deployment.yaml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 4000) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/dist/main.js"]
CMD ["serve"]
