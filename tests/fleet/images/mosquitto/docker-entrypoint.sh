#!/bin/sh
# Same behaviour as the official eclipse-mosquitto entrypoint: when started as root,
# hand /mosquitto to the mosquitto user (1883) so its files may stay private (0600).
set -e
if [ "$(id -u)" = 0 ]; then
    [ -d /mosquitto ] && chown -R mosquitto:mosquitto /mosquitto || true
fi
exec "$@"
