#!/bin/sh
# As the official image: Node-RED with its userDir in /data, the flow file from $FLOWS,
# extra node options from $NODE_OPTIONS and any arguments passed on. exec: node is PID 1
# and Node-RED stops its flows cleanly on SIGTERM.
# shellcheck disable=SC2086  # NODE_OPTIONS is a list of options
exec node $NODE_OPTIONS /usr/local/lib/node_modules/node-red/red.js --userDir /data "$FLOWS" "$@"
