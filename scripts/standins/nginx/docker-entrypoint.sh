#!/bin/sh
# Stand-in for the entry point of the official nginx image, written from that image's
# documentation ("Using environment variables in nginx configuration", "Running nginx as a
# non-root user" and the /docker-entrypoint.d/ hook description), not from its source.
#
# Documented behaviour reproduced here:
# - only when the command is `nginx` or `nginx-debug`, the hook directory /docker-entrypoint.d/
#   is processed in name order: `*.envsh` files that are executable are sourced (they may export
#   variables), `*.sh` files that are executable are run; anything else is reported and skipped;
# - NGINX_ENTRYPOINT_QUIET_LOGS set to anything non-empty silences the entry point's own lines;
# - then the command is exec'ed (so nginx is PID 1 under docker's init, or the init's child).
set -eu

log() {
  if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
    echo "$0: $*" >&2
  fi
}

if [ "$#" -gt 0 ] && { [ "$1" = nginx ] || [ "$1" = nginx-debug ]; }; then
  if [ -d /docker-entrypoint.d ] && [ -n "$(find /docker-entrypoint.d -mindepth 1 -maxdepth 1 -print -quit)" ]; then
    log "running the hooks in /docker-entrypoint.d/"
    for hook in $(find /docker-entrypoint.d -mindepth 1 -maxdepth 1 -type f | sort); do
      case "$hook" in
        *.envsh)
          if [ -x "$hook" ]; then
            log "sourcing $hook"
            # shellcheck disable=SC1090
            . "$hook"
          else
            log "ignoring $hook, not executable"
          fi
          ;;
        *.sh)
          if [ -x "$hook" ]; then
            log "running $hook"
            "$hook"
          else
            log "ignoring $hook, not executable"
          fi
          ;;
        *) log "ignoring $hook" ;;
      esac
    done
    log "configuration complete; ready for start up"
  else
    log "no files in /docker-entrypoint.d/, skipping configuration"
  fi
fi

exec "$@"
