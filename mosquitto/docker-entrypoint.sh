#!/bin/sh
# Entry point for the eclipse-mosquitto:2 image (busybox sh; keep it POSIX).
#
# Builds the password file from environment values at every start, so no secret is ever
# committed or baked into an image, then hands over to mosquitto. The native stack
# (src/native/mosquitto.ts, Mosquitto.startProject) builds its file the same way:
# an empty file, then `mosquitto_passwd -b` once per user.
#
#   MQTT_SERVICE_USERNAME / MQTT_SERVICE_PASSWORD   the gateway service (see ./acl, `user`)
#   MQTT_DEVICE_USERNAME  / MQTT_DEVICE_PASSWORD    shared by the (simulated) devices
set -eu

# The directories are overridable only so the script can be exercised outside the image
# (test/integration/mosquitto-security.test.ts); the image uses the defaults.
CONFIG_DIR=${MOSQUITTO_CONFIG_DIR:-/mosquitto/config}
# Must match password_file and acl_file in mosquitto.conf. A tmpfs in docker-compose.yml,
# so the hashes never land in an image layer or a volume.
AUTH_DIR=${MOSQUITTO_AUTH_DIR:-/mosquitto/auth}
DATA_DIR=${MOSQUITTO_DATA_DIR:-/mosquitto/data}

fail() {
  echo "mosquitto entrypoint: $*" >&2
  exit 1
}

: "${MQTT_SERVICE_USERNAME:=service}"
: "${MQTT_DEVICE_USERNAME:=device}"
[ -n "${MQTT_SERVICE_PASSWORD:-}" ] || fail "MQTT_SERVICE_PASSWORD is not set; refusing to start a broker without it (set it in .env, see .env.example)"
[ -n "${MQTT_DEVICE_PASSWORD:-}" ] || fail "MQTT_DEVICE_PASSWORD is not set; refusing to start a broker without it (set it in .env, see .env.example)"
[ "$MQTT_SERVICE_PASSWORD" != "$MQTT_DEVICE_PASSWORD" ] || fail "MQTT_SERVICE_PASSWORD and MQTT_DEVICE_PASSWORD are the same; whoever holds the devices' password would hold the service's too"
[ "$MQTT_SERVICE_USERNAME" != "$MQTT_DEVICE_USERNAME" ] || fail "MQTT_SERVICE_USERNAME and MQTT_DEVICE_USERNAME are both \"$MQTT_SERVICE_USERNAME\"; devices would get the service's rights"
# The ACL grants the service's rights by username: a name the ACL does not know would
# start a broker on which the service can subscribe to nothing.
grep -qxF "user $MQTT_SERVICE_USERNAME" "$CONFIG_DIR/acl" || fail "MQTT_SERVICE_USERNAME=\"$MQTT_SERVICE_USERNAME\" has no \`user $MQTT_SERVICE_USERNAME\` section in $CONFIG_DIR/acl; rename it there too"

mkdir -p "$AUTH_DIR"
umask 077
: > "$AUTH_DIR/passwd"
mosquitto_passwd -b "$AUTH_DIR/passwd" "$MQTT_SERVICE_USERNAME" "$MQTT_SERVICE_PASSWORD" \
  || fail "mosquitto_passwd could not add MQTT_SERVICE_USERNAME=\"$MQTT_SERVICE_USERNAME\""
mosquitto_passwd -b "$AUTH_DIR/passwd" "$MQTT_DEVICE_USERNAME" "$MQTT_DEVICE_PASSWORD" \
  || fail "mosquitto_passwd could not add MQTT_DEVICE_USERNAME=\"$MQTT_DEVICE_USERNAME\""
# The ACL is mounted read-only with the host's ownership; mosquitto >= 2.0.16 warns (and
# "future versions will refuse") unless the files it reads are the broker user's, 0600.
cp "$CONFIG_DIR/acl" "$AUTH_DIR/acl"
chown -R mosquitto:mosquitto "$AUTH_DIR"
chmod 0700 "$AUTH_DIR"
chmod 0600 "$AUTH_DIR/passwd" "$AUTH_DIR/acl"

# Persistence fails silently when the broker user cannot write its directory.
mkdir -p "$DATA_DIR"
chown -R mosquitto:mosquitto "$DATA_DIR"

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
