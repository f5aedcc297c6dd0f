#!/bin/sh
# Stand-in for the entry point of the official redis image (docker-library/redis), reproducing
# what that image documents and does for a command like docker-compose.yml's:
# - a command that starts with an option (`--appendonly yes`) or names a `*.conf` file is run as
#   `redis-server <those arguments>`;
# - started as root for `redis-server`, it gives the working directory (/data) to the `redis` user
#   and runs the server as that user, without root's groups; started as any other user (compose's
#   `user: redis`) it changes no owner and runs the command as it is;
# - the default umask 0022 becomes 0077, so the data files are the server's alone;
# - then the command is exec'ed (the server is PID 1 and gets docker's SIGTERM itself).
set -e

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --clear-groups -- "$0" "$@"
fi

if [ "$(umask)" = 0022 ]; then
  umask 0077
fi

exec "$@"
