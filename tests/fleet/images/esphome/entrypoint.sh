#!/bin/bash
# The official image's entrypoint, as far as the fleet tests need it: PlatformIO keeps its
# platforms, packages and cache under /cache when that is mounted, else under
# /config/.esphome/platformio; /build, when mounted, is the build path. `dashboard` starts
# ESPHome Device Builder on 0.0.0.0:6052, anything else is an esphome command line.
set -e

if [[ -d /cache ]]; then
    pio_base=/cache/platformio
else
    pio_base=/config/.esphome/platformio
fi
mkdir -p "$pio_base"
export PLATFORMIO_PLATFORMS_DIR="$pio_base/platforms"
export PLATFORMIO_PACKAGES_DIR="$pio_base/packages"
export PLATFORMIO_CACHE_DIR="$pio_base/cache"
if [[ -d /build ]]; then
    export ESPHOME_BUILD_PATH=/build
fi

if [[ "${1:-}" == dashboard ]]; then
    shift
    args=()
    while (($#)); do
        case "$1" in
            # the old dashboard's flag for the bind address
            --address) args+=(--host "$2"); shift 2 ;;
            --address=*) args+=(--host "${1#--address=}"); shift ;;
            --open-ui) shift ;;
            *) args+=("$1"); shift ;;
        esac
    done
    exec esphome-device-builder "${args[@]}"
fi
exec esphome "$@"
