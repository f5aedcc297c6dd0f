#!/usr/bin/env bash
# Installs what the tests, the native stack and the benchmark need on a fresh Debian machine:
# Debian's mosquitto, redis-server, nginx (and its nchan module, for the benchmark), chromium, prometheus (and promtool), envsubst, openssl, the Docker engine
# (docker.io), debootstrap (the compose tests' stand-in images), the Compose v2 plugin, then the
# npm dependencies from the lockfile. Each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || [[ " ${need[*]-} " == *" mosquitto "* ]] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
[ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v envsubst >/dev/null 2>&1 || need+=(gettext-base)
# nchan: the benchmark's reference target for fan-out inside nginx (not used by the project itself).
[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || need+=(libnginx-mod-nchan)
# The tests check the generated certificates with an independent verifier.
command -v openssl >/dev/null 2>&1 || need+=(openssl)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "install-deps: missing ${need[*]}; run as root: apt-get install -y ${need[*]}" >&2
      exit 1
    fi
  fi
  echo "install-deps: installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian's redis-server package enables and starts a system daemon on 6379 (where systemd or
  # sysvinit runs services; a container's policy-rc.d usually forbids it). The project starts its
  # own redis-server per stack and test on a free port, so a system one would only hold memory and
  # a well-known port: stop it and keep it from coming back at boot.
  if [[ " ${need[*]} " == *" redis-server "* ]]; then
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
      $sudo systemctl disable --now redis-server.service >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/redis-server ]; then
      $sudo /etc/init.d/redis-server stop >/dev/null 2>&1 || true
      command -v update-rc.d >/dev/null 2>&1 && $sudo update-rc.d redis-server disable >/dev/null 2>&1 || true
    fi
  fi
fi

# The Compose v2 plugin (`docker compose`, what the README runs): Debian 12 has only the old
# docker-compose 1.29, Debian 13 has 2.26 as `docker-compose`, which needs nothing newer than
# Debian 12's libc. Only that one package comes from Debian 13: its suite is pinned to priority 1,
# so apt never takes anything else from it unless asked by name.
if [ ! -x /usr/libexec/docker/cli-plugins/docker-compose ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "install-deps: missing the docker compose plugin; run as root: bash scripts/install-deps.sh" >&2
      exit 1
    fi
  fi
  if [ ! -f /etc/apt/sources.list.d/trixie-compose.sources ]; then
    # The mirror this machine already uses for Debian 12.
    mirror=$(awk '/^URIs:/ { u = $2 } /^Suites:.*(^| )bookworm( |$)/ { print u; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || { echo "install-deps: no Debian 12 mirror found in /etc/apt/sources.list(.d)" >&2; exit 1; }
    printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" \
      | $sudo tee /etc/apt/sources.list.d/trixie-compose.sources > /dev/null
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 1\n' | $sudo tee /etc/apt/preferences.d/trixie-compose > /dev/null
  fi
  echo "install-deps: installing the Compose v2 plugin (docker-compose from Debian 13)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends docker-compose/trixie >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-deps: npm ci"
  npm ci --no-audit --no-fund
fi
