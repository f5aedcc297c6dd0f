#!/bin/sh
# Entry point for the eclipse-mosquitto:2 image (busybox sh; keep it POSIX).
#
# At the first start (no dynamic-security.json on the data volume yet) it makes the dynamic
# security plugin's file from dynamic-security.template.json and two logins taken from the
# environment, so no secret is ever committed or baked into an image; then it hands over to
# mosquitto. From then on the plugin owns the file (devices are added and removed through it,
# `npm run devices`), and later changes of these variables do not apply to it (see README,
# "Broker identities"). The native stack (src/native/mosquitto.ts, Mosquitto.startProject)
# renders the same template with the same hashes.
#
#   MQTT_SERVICE_USERNAME / MQTT_SERVICE_PASSWORD   the gateway service (role `service`)
#   MQTT_ADMIN_USERNAME   / MQTT_ADMIN_PASSWORD     manages the plugin over $CONTROL (role `admin`)
set -eu

# The directories are overridable only so the script can be exercised outside the image
# (test/integration/mosquitto-security.test.ts); the image uses the defaults.
CONFIG_DIR=${MOSQUITTO_CONFIG_DIR:-/mosquitto/config}
# Must match persistence_location and plugin_opt_config_file in mosquitto.conf.
DATA_DIR=${MOSQUITTO_DATA_DIR:-/mosquitto/data}
DYNSEC_FILE="$DATA_DIR/dynamic-security.json"

fail() {
  echo "mosquitto entrypoint: $*" >&2
  exit 1
}

: "${MQTT_SERVICE_USERNAME:=service}"
: "${MQTT_ADMIN_USERNAME:=admin}"
# Names go into JSON and sed unescaped: keep them to characters that need no escaping.
for var in MQTT_SERVICE_USERNAME MQTT_ADMIN_USERNAME; do
  eval "value=\$$var"
  printf '%s' "$value" | grep -Eqx '[A-Za-z0-9_.-]{1,64}' \
    || fail "$var=\"$value\" is invalid: expected 1 to 64 letters, digits, _ . or -"
done
[ "$MQTT_SERVICE_USERNAME" != "$MQTT_ADMIN_USERNAME" ] || fail "MQTT_SERVICE_USERNAME and MQTT_ADMIN_USERNAME are both \"$MQTT_SERVICE_USERNAME\"; the service would get the admin's rights"

mkdir -p "$DATA_DIR"
if [ -s "$DYNSEC_FILE" ]; then
  # Kept from an earlier start: the service's login must be in it, or the broker would start
  # with a healthcheck and a service that can never log in.
  grep -Eq "\"username\":[[:space:]]*\"$MQTT_SERVICE_USERNAME\"" "$DYNSEC_FILE" \
    || fail "MQTT_SERVICE_USERNAME=\"$MQTT_SERVICE_USERNAME\" is not a client in $DYNSEC_FILE (made at the first start with another name); rename it back, or see README \"Broker identities\""
else
  [ -n "${MQTT_SERVICE_PASSWORD:-}" ] || fail "MQTT_SERVICE_PASSWORD is not set; refusing to start a broker without it (set it in .env, see .env.example)"
  [ -n "${MQTT_ADMIN_PASSWORD:-}" ] || fail "MQTT_ADMIN_PASSWORD is not set; refusing to start a broker without it (set it in .env, see .env.example)"
  [ "$MQTT_SERVICE_PASSWORD" != "$MQTT_ADMIN_PASSWORD" ] || fail "MQTT_SERVICE_PASSWORD and MQTT_ADMIN_PASSWORD are the same; whoever holds the service's password would hold the admin's too"
  umask 077
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # mosquitto_passwd writes `name:$7$<iterations>$<salt>$<hash>` (PBKDF2-SHA512, base64): the
  # very fields the plugin stores as "iterations", "salt" and "password".
  hash_fields() { # <prefix> <username> <password>
    : > "$work/passwd"
    mosquitto_passwd -b "$work/passwd" "$2" "$3" || fail "mosquitto_passwd could not hash the password of \"$2\""
    sed -n 's/^[^:]*:\$7\$\([0-9]*\)\$\([^$]*\)\$\(.*\)$/s|@'"$1"'_ITERATIONS@|\1|; s|@'"$1"'_SALT@|\2|; s|@'"$1"'_HASH@|\3|;/p' "$work/passwd"
  }
  {
    hash_fields ADMIN "$MQTT_ADMIN_USERNAME" "$MQTT_ADMIN_PASSWORD"
    hash_fields SERVICE "$MQTT_SERVICE_USERNAME" "$MQTT_SERVICE_PASSWORD"
    echo "s|@ADMIN_USERNAME@|$MQTT_ADMIN_USERNAME|; s|@SERVICE_USERNAME@|$MQTT_SERVICE_USERNAME|;"
  } > "$work/fill.sed"
  [ "$(grep -c _HASH@ "$work/fill.sed")" -eq 2 ] || fail "mosquitto_passwd wrote an unexpected hash format (expected \$7\$)"
  sed -f "$work/fill.sed" "$CONFIG_DIR/dynamic-security.template.json" > "$work/dynamic-security.json"
  ! grep -q '@[A-Z_]*@' "$work/dynamic-security.json" || fail "$CONFIG_DIR/dynamic-security.template.json has a placeholder this script does not fill"
  mv "$work/dynamic-security.json" "$DYNSEC_FILE"
  # exec below would skip the EXIT trap.
  rm -rf "$work"
  trap - EXIT
  echo "mosquitto entrypoint: made $DYNSEC_FILE with the logins \"$MQTT_SERVICE_USERNAME\" (service) and \"$MQTT_ADMIN_USERNAME\" (admin)" >&2
fi

# The plugin rewrites its file (and persistence its database) as the broker user, which fails
# silently when that user cannot write the directory.
chown -R mosquitto:mosquitto "$DATA_DIR"
chmod 0700 "$DATA_DIR"
chmod 0600 "$DYNSEC_FILE"

# TLS (listener 8883): the certificate and key compose's `certs` service made, or a real pair
# mounted in its place, copied for the broker user and owner-only, as for the files above.
TLS_SOURCE=${MOSQUITTO_TLS_SOURCE:-/mosquitto/certs}
TLS_DIR=${MOSQUITTO_TLS_DIR:-/mosquitto/tls}
for file in server.crt server.key; do
  [ -s "$TLS_SOURCE/$file" ] || fail "no $TLS_SOURCE/$file for the TLS listener; mount the certs volume (docker-compose.yml) or a directory with your server.crt and server.key there"
done
mkdir -p "$TLS_DIR"
cp "$TLS_SOURCE/server.crt" "$TLS_SOURCE/server.key" "$TLS_DIR/"
chown -R mosquitto:mosquitto "$TLS_DIR"
chmod 0700 "$TLS_DIR"
chmod 0600 "$TLS_DIR/server.crt" "$TLS_DIR/server.key"

if [ "$#" -eq 0 ]; then
  set -- /usr/sbin/mosquitto -c "$CONFIG_DIR/mosquitto.conf"
fi
exec "$@"
